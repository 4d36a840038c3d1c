"""Read settings from the environment, failing loudly.

Every reader raises ``ImproperlyConfigured`` with the variable's name, what it expected
and what it got, so a bad deployment stops at start-up with a message an operator can act on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_MISSING = object()
_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


def _raw(name: str) -> str | None:
    """The variable's value, with an empty string treated as unset."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def is_set(name: str) -> bool:
    return _raw(name) is not None


def env_str(name: str, default=_MISSING, *, choices: tuple[str, ...] | None = None):
    value = _raw(name)
    if value is None:
        if default is _MISSING:
            raise ImproperlyConfigured(f"{name} is required but not set")
        return default
    if choices is not None and value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false, 1/0, yes/no, on/off); got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ImproperlyConfigured(f"{name} must be {bounds}; got {number}")
    return number


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; blank items are dropped."""
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_urls(name: str, *, schemes: tuple[str, ...]) -> list[str] | None:
    """A comma-separated list of URLs with one of ``schemes`` and a host, or None when unset."""
    value = _raw(name)
    if value is None:
        return None
    urls = [item.strip() for item in value.split(",") if item.strip()]
    if not urls:
        raise ImproperlyConfigured(f"{name} holds no URL; got {value!r}")
    for url in urls:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ImproperlyConfigured(f"{name} has a URL with an invalid port: {url!r}") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise ImproperlyConfigured(
                f"{name} must be URL(s) like {schemes[0]}://host:port (schemes: {', '.join(schemes)}); got {url!r}"
            )
    return urls


def env_file(name: str) -> str | None:
    """A path to a file that must exist, or None when unset."""
    value = _raw(name)
    if value is None:
        return None
    if not Path(value).is_file():
        raise ImproperlyConfigured(f"{name} must name an existing file; {value!r} does not exist")
    return value


def env_rate(name: str, default: str) -> str:
    """A request rate as DRF's throttles read it: ``N/second``, ``N/minute``, ``N/hour`` or ``N/day``."""
    value = _raw(name)
    if value is None:
        return default
    value = value.strip().replace(" ", "")
    if not _RATE.match(value) or int(value.split("/")[0]) < 1:
        raise ImproperlyConfigured(
            f"{name} must be a rate like 100/minute (per second, minute, hour or day); got {value!r}"
        )
    return value
