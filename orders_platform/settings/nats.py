from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .env import env_file, env_float, env_str, env_urls


def nats(*, fallback: Callable[[], list[str]] | None) -> dict:
    """``NATS`` from ``NATS_URL`` (comma-separated for a cluster) and its credential/TLS variables."""
    servers = env_urls("NATS_URL", schemes=("nats", "tls", "ws", "wss"))
    if servers is None:
        if fallback is None:
            raise ImproperlyConfigured("NATS_URL is required here, e.g. nats://n1:4222,nats://n2:4222")
        servers = fallback()
    tls_cert, tls_key = env_file("NATS_TLS_CERT"), env_file("NATS_TLS_KEY")
    user = env_str("NATS_USER", None)
    if bool(tls_cert) != bool(tls_key):
        raise ImproperlyConfigured("NATS_TLS_CERT and NATS_TLS_KEY must be set together (client certificate and key)")
    return {
        "SERVERS": servers,
        "NAME": env_str("NATS_CLIENT_NAME", "orders-platform"),
        "CREDS": env_file("NATS_CREDS"),
        "NKEY_SEED": env_file("NATS_NKEY_SEED"),
        "TOKEN": env_str("NATS_TOKEN", None),
        "USER": user,
        "PASSWORD": _password(),
        "TLS_CA": env_file("NATS_TLS_CA"),
        "TLS_CERT": tls_cert,
        "TLS_KEY": tls_key,
        "CONNECT_TIMEOUT": env_float("NATS_CONNECT_TIMEOUT", 2.0, minimum=0.1),
        # Replies and fetched messages come to <prefix>.<unique>; a secured server lets each user
        # subscribe to its own prefix only (docker/nats/auth.conf: _INBOX.<user>).
        "INBOX_PREFIX": _inbox_prefix(env_str("NATS_INBOX_PREFIX", None), user),
    }


def _inbox_prefix(value: str | None, user: str | None) -> str:
    """``NATS_INBOX_PREFIX``, else ``_INBOX.<NATS_USER>`` (what ``manage.py nats_auth`` allows that
    user), else nats-py's ``_INBOX``."""
    if value is None:
        return f"_INBOX.{user}" if user else "_INBOX"
    tokens = value.split(".")
    if not value or any(not token or any(ch in token for ch in " \t*>") for token in tokens):
        raise ImproperlyConfigured(
            f"NATS_INBOX_PREFIX must be subject tokens without wildcards, e.g. _INBOX.web; got {value!r}"
        )
    return value


def _password() -> str | None:
    """``NATS_PASSWORD``, or the content of the file ``NATS_PASSWORD_FILE`` names (a mounted
    Secret; one trailing line break ignored), never both."""
    password, path = env_str("NATS_PASSWORD", None), env_file("NATS_PASSWORD_FILE")
    if path is None:
        return password
    if password is not None:
        raise ImproperlyConfigured("NATS_PASSWORD and NATS_PASSWORD_FILE are both set: set one of them")
    text = Path(path).read_text(encoding="utf-8").removesuffix("\n")
    if not text or "\n" in text:
        raise ImproperlyConfigured(f"NATS_PASSWORD_FILE must name a file holding one password on one line ({path})")
    return text
