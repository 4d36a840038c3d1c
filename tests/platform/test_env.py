"""The environment readers behind every setting: each bad value names its variable."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from orders_platform.settings.env import env_bool, env_file, env_int, env_list, env_str, env_urls


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("1", True), ("YES", True), ("on", True), ("false", False), ("0", False)]
)
def test_booleans_accept_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", not expected) is expected


def test_a_malformed_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"FLAG must be a boolean .* got 'maybe'"):
        env_bool("FLAG", False)


def test_an_empty_value_counts_as_unset(monkeypatch):
    monkeypatch.setenv("NAME", "")
    assert env_str("NAME", "fallback") == "fallback"
    with pytest.raises(ImproperlyConfigured, match="NAME is required but not set"):
        env_str("NAME")


def test_integers_are_parsed_and_bounded(monkeypatch):
    monkeypatch.setenv("SIZE", "12")
    assert env_int("SIZE", 1, minimum=1) == 12
    monkeypatch.setenv("SIZE", "twelve")
    with pytest.raises(ImproperlyConfigured, match="SIZE must be an integer; got 'twelve'"):
        env_int("SIZE", 1)
    monkeypatch.setenv("SIZE", "0")
    with pytest.raises(ImproperlyConfigured, match="SIZE must be at least 1; got 0"):
        env_int("SIZE", 1, minimum=1)


def test_choices_are_enforced(monkeypatch):
    monkeypatch.setenv("LEVEL", "LOUD")
    with pytest.raises(ImproperlyConfigured, match="LEVEL must be one of DEBUG, INFO; got 'LOUD'"):
        env_str("LEVEL", "INFO", choices=("DEBUG", "INFO"))


def test_lists_drop_blank_items(monkeypatch):
    monkeypatch.setenv("HOSTS", " a.example , ,b.example,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_urls_must_have_a_known_scheme_and_a_host(monkeypatch):
    monkeypatch.setenv("NATS_URL", "nats://n1:4222, tls://n2:4222")
    assert env_urls("NATS_URL", schemes=("nats", "tls")) == ["nats://n1:4222", "tls://n2:4222"]
    for bad in ("http://n1:4222", "n1:4222", "nats://", "nats://n1:port"):
        monkeypatch.setenv("NATS_URL", bad)
        with pytest.raises(ImproperlyConfigured, match="NATS_URL"):
            env_urls("NATS_URL", schemes=("nats", "tls"))


def test_files_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ImproperlyConfigured, match="CA must name an existing file"):
        env_file("CA")
    (tmp_path / "ca.pem").write_text("x")
    monkeypatch.setenv("CA", str(tmp_path / "ca.pem"))
    assert env_file("CA") == str(tmp_path / "ca.pem")


def test_the_nats_password_comes_from_a_variable_or_a_mounted_file_never_both(monkeypatch, tmp_path):
    from orders_platform.settings.nats import nats

    monkeypatch.setenv("NATS_URL", "nats://n1:4222")
    monkeypatch.delenv("NATS_PASSWORD", raising=False)
    secret = tmp_path / "password"
    secret.write_text("p3c1ret\n")
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(secret))
    assert nats(fallback=None)["PASSWORD"] == "p3c1ret", "one trailing line break is not part of it"
    monkeypatch.setenv("NATS_PASSWORD", "other")
    with pytest.raises(ImproperlyConfigured, match="NATS_PASSWORD and NATS_PASSWORD_FILE are both set"):
        nats(fallback=None)
    monkeypatch.delenv("NATS_PASSWORD")
    secret.write_text("")
    with pytest.raises(ImproperlyConfigured, match="NATS_PASSWORD_FILE must name a file holding one password"):
        nats(fallback=None)
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="NATS_PASSWORD_FILE must name an existing file"):
        nats(fallback=None)
