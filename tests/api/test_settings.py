"""The API's settings come from the environment and a bad value stops start-up, naming it."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from orders_platform.settings.env import env_rate
from tests.support import ROOT, development_check


@pytest.mark.parametrize("raw", ["100/minute", "5/s", "20/hour", "1000/day", " 7 / min "])
def test_rates_take_drf_spellings(monkeypatch, raw):
    monkeypatch.setenv("RATE", raw)
    assert env_rate("RATE", "1/second") == raw.replace(" ", "")


@pytest.mark.parametrize("raw", ["lots", "100", "100/week", "0/minute", "-1/minute", "1.5/minute"])
def test_a_malformed_rate_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("RATE", raw)
    with pytest.raises(ImproperlyConfigured, match=r"RATE must be a rate like 100/minute"):
        env_rate("RATE", "1/second")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("API_THROTTLE_USER", "lots", "API_THROTTLE_USER must be a rate like 100/minute"),
        ("API_MAX_ORDER_LINES", "500", "API_MAX_ORDER_LINES must be between 1 and 50; got 500"),
        ("API_IDEMPOTENCY_KEY_RETENTION_HOURS", "1", "API_IDEMPOTENCY_KEY_RETENTION_HOURS must be at least 24"),
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", "big", "DATA_UPLOAD_MAX_MEMORY_SIZE must be an integer"),
        ("CACHE_URL", "memcached://cache:11211", "CACHE_URL must be URL(s) like redis://host:port"),
    ],
)
def test_a_bad_api_setting_stops_start_up(tmp_path, variable, value, message):
    result = development_check(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_api_variable_has_a_row_in_the_readme_configuration_table():
    settings_dir = ROOT / "orders_platform" / "settings"
    source = (settings_dir / "api.py").read_text() + (settings_dir / "drf.py").read_text()
    variables = set(re.findall(r'env_\w+\(\s*"([A-Z0-9_]+)"', source))
    readme = (ROOT / "README.md").read_text()
    assert variables >= {"API_THROTTLE_USER", "DATA_UPLOAD_MAX_MEMORY_SIZE", "CACHE_URL"}
    assert not [name for name in sorted(variables) if f"| `{name}` |" not in readme]
