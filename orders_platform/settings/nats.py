from collections.abc import Callable

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
    if bool(tls_cert) != bool(tls_key):
        raise ImproperlyConfigured("NATS_TLS_CERT and NATS_TLS_KEY must be set together (client certificate and key)")
    return {
        "SERVERS": servers,
        "NAME": env_str("NATS_CLIENT_NAME", "orders-platform"),
        "CREDS": env_file("NATS_CREDS"),
        "NKEY_SEED": env_file("NATS_NKEY_SEED"),
        "TOKEN": env_str("NATS_TOKEN", None),
        "USER": env_str("NATS_USER", None),
        "PASSWORD": env_str("NATS_PASSWORD", None),
        "TLS_CA": env_file("NATS_TLS_CA"),
        "TLS_CERT": tls_cert,
        "TLS_KEY": tls_key,
        "CONNECT_TIMEOUT": env_float("NATS_CONNECT_TIMEOUT", 2.0, minimum=0.1),
    }
