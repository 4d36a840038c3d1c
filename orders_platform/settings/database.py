from collections.abc import Callable

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_str

EXAMPLE = "postgres://user:password@host:5432/dbname"


def databases(*, fallback: Callable[[], str] | None) -> dict:
    """``DATABASES`` from ``DATABASE_URL``; when it is unset, ``fallback()`` gives the URL or start-up fails."""
    url = env_str("DATABASE_URL", None)
    if url is None:
        if fallback is None:
            raise ImproperlyConfigured(f"DATABASE_URL is required here, e.g. {EXAMPLE}")
        url = fallback()
    try:
        config = dj_database_url.parse(
            url,
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
            ssl_require=env_bool("DATABASE_SSL_REQUIRE", False),
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL ({exc}); expected {EXAMPLE}") from None
    if config.get("ENGINE") != "django.db.backends.postgresql" or not config.get("NAME"):
        raise ImproperlyConfigured(f"DATABASE_URL must be a PostgreSQL URL with a database name, e.g. {EXAMPLE}")
    config.setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1))
    config["TEST"] = {"NAME": env_str("DATABASE_TEST_NAME", None)}
    return {"default": config}
