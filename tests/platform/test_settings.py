"""Start-up with each environment, checked through the real ``manage.py`` in a child process."""

import secrets

import pytest

from tests.support import clean_env, development_check, manage

PRODUCTION = "orders_platform.settings.production"


def production_env(**overrides):
    env = {
        "DJANGO_SETTINGS_MODULE": PRODUCTION,
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "orders.example.com",
        "DATABASE_URL": "postgres://orders:secret@db.internal:5432/orders",
        "NATS_URL": "nats://n1.internal:4222,nats://n2.internal:4222,nats://n3.internal:4222",
        "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    }
    env.update(overrides)
    return clean_env(**{key: value for key, value in env.items() if value is not None})


def test_production_settings_pass_the_deployment_checklist_with_no_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DEBUG": "true"}, "DEBUG must be off in production"),
        ({"DEBUG": "sometimes"}, "DEBUG must be a boolean"),
        ({"SECRET_KEY": None}, "SECRET_KEY is required but not set"),
        ({"SECRET_KEY": "django-insecure-" + "x" * 60}, "SECRET_KEY must be a long random value"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be a long random value"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS is required in production"),
        ({"DATABASE_URL": None}, "DATABASE_URL is required here"),
        ({"DATABASE_URL": "no-such-scheme://db/orders"}, "DATABASE_URL is not a valid database URL"),
        ({"DATABASE_URL": "mysql://u:p@db/orders"}, "DATABASE_URL must be a PostgreSQL URL"),
        ({"DATABASE_URL": "sqlite:///orders.db"}, "DATABASE_URL must be a PostgreSQL URL"),
        ({"DATABASE_CONN_MAX_AGE": "forever"}, "DATABASE_CONN_MAX_AGE must be an integer"),
        ({"NATS_URL": None}, "NATS_URL is required here"),
        ({"NATS_URL": "http://n1:4222"}, "NATS_URL must be URL(s) like nats://host:port"),
        ({"NATS_TLS_CA": "/nonexistent/ca.pem"}, "NATS_TLS_CA must name an existing file"),
        ({"CELERY_BROKER_URL": None}, "CELERY_BROKER_URL is required in production"),
        ({"CELERY_BROKER_URL": "ftp://broker"}, "CELERY_BROKER_URL must use one of"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_message_naming_the_variable(overrides, message):
    result = manage("check", env=production_env(**overrides))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Configuration error (orders_platform.settings.production)" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_settings_report_bad_values_too(tmp_path):
    result = development_check(tmp_path, DEBUG="perhaps")
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "postgres").exists(), "no embedded server is started when URLs are given"


def test_an_unknown_settings_module_is_named():
    result = manage("check", env=production_env(DJANGO_SETTINGS_MODULE="orders_platform.settings.prod"))
    assert result.returncode != 0
    assert "DJANGO_SETTINGS_MODULE='orders_platform.settings.prod' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY must be an integer; got 'many'"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be between 1 and 64; got 0"),
        ({"WEB_THREADS": "-2"}, "WEB_THREADS must be between 1 and 64; got -2"),
        ({"WEB_RELOAD": "maybe"}, "WEB_RELOAD must be a boolean"),
        ({"WEB_ACCESS_LOG": "loud"}, "WEB_ACCESS_LOG must be a boolean"),
    ],
)
def test_a_bad_web_server_setting_stops_the_development_start_up(tmp_path, overrides, message):
    result = development_check(tmp_path, **overrides)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Configuration error (orders_platform.settings.development)" in result.stderr
    assert "Traceback" not in result.stderr
