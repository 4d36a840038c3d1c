"""The one place that turns ``settings.NATS`` into a nats-py connection."""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

import nats
from django.conf import settings
from nats.aio.client import Client

logger = logging.getLogger(__name__)


def connect_options(**overrides: Any) -> dict[str, Any]:
    """nats-py ``connect()`` keyword arguments from ``settings.NATS``, then ``overrides``."""
    config = settings.NATS
    if not config["SERVERS"]:
        raise RuntimeError("settings.NATS['SERVERS'] is empty: set NATS_URL")
    options: dict[str, Any] = {
        "servers": config["SERVERS"],
        "name": config["NAME"],
        "connect_timeout": config["CONNECT_TIMEOUT"],
        "error_cb": _on_error,
        "disconnected_cb": _on_disconnected,
        "reconnected_cb": _on_reconnected,
    }
    if config["CREDS"]:
        options["user_credentials"] = config["CREDS"]
    if config["NKEY_SEED"]:
        options["nkeys_seed"] = config["NKEY_SEED"]
    if config["TOKEN"]:
        options["token"] = config["TOKEN"]
    if config["USER"]:
        options["user"], options["password"] = config["USER"], config["PASSWORD"]
    if config["TLS_CA"] or config["TLS_CERT"]:
        context = ssl.create_default_context(cafile=config["TLS_CA"])
        if config["TLS_CERT"]:
            context.load_cert_chain(config["TLS_CERT"], config["TLS_KEY"])
        options["tls"] = context
    options.update(overrides)
    return options


async def connect(**overrides: Any) -> Client:
    """A connected client; see ``connect_options`` for what can be overridden."""
    return await nats.connect(**connect_options(**overrides))


async def close_client(client: Client, timeout: float = 5.0) -> None:
    """Flush what is buffered (acks, naks, publishes) and close.

    Not ``drain()``: it waits for the pending queues of pull subscriptions, which nothing
    reads once the fetch loop has stopped, so it would only time out.
    """
    with contextlib.suppress(Exception):
        await client.flush(timeout=timeout)
    with contextlib.suppress(Exception):
        await client.close()


async def _on_error(exc: Exception) -> None:
    logger.warning("NATS error: %s", exc)


async def _on_disconnected() -> None:
    logger.warning("NATS disconnected")


async def _on_reconnected() -> None:
    logger.info("NATS reconnected")
