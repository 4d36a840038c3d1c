"""The one place that turns ``settings.NATS`` into a nats-py connection."""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

from django.conf import settings
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoServersError, StaleConnectionError
from nats.js.client import JetStreamContext
from nats.js.errors import ServiceUnavailableError

logger = logging.getLogger(__name__)


FETCH_WAIT = 1.0  # seconds a fetch waits for messages; also the worst-case shutdown latency
# A fetch that fails for one of these waits and tries again (the client reconnects by itself,
# JetStream answers 503 while the server starts or stops); anything else ends the process.
FETCH_TRANSIENT = (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoServersError,
    StaleConnectionError,
    ServiceUnavailableError,
    OSError,
)


class ConnectionLost(RuntimeError):
    """The NATS client is closed for good (nats-py closes it after some server errors and never
    reconnects): the process must exit non-zero and be restarted by its supervisor."""


def exit_if_closed(client: Client, who: str) -> None:
    """Raise :class:`ConnectionLost` when ``client`` is closed for good: fetching on would keep
    the process alive but deaf, so it exits for its supervisor to restart it."""
    if client.is_closed:
        raise ConnectionLost(f"{who}: the NATS connection is closed for good")


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
        "reconnected_cb": _on_reconnected,
    }
    if config.get("INBOX_PREFIX"):
        options["inbox_prefix"] = config["INBOX_PREFIX"]
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
    client = Client()

    async def on_disconnected() -> None:
        # A close this process asked for is no news; losing the server is.
        if client.is_closed or getattr(client, "eventbus_closing", False):
            logger.info("NATS connection closed")
        else:
            logger.warning("NATS disconnected")

    await client.connect(**connect_options(**{"disconnected_cb": on_disconnected, **overrides}))
    return client


async def close_client(client: Client, timeout: float = 5.0) -> None:
    """Flush what is buffered (acks, naks, publishes) and close.

    Not ``drain()``: it waits for the pending queues of pull subscriptions, which nothing
    reads once the fetch loop has stopped, so it would only time out.
    """
    client.eventbus_closing = True
    with contextlib.suppress(Exception):
        await client.flush(timeout=timeout)
    with contextlib.suppress(Exception):
        await client.close()


async def _on_error(exc: Exception) -> None:
    logger.warning("NATS error: %s", exc)


async def _on_reconnected() -> None:
    logger.info("NATS reconnected")


# nats-py takes any fetched message with a ``Status`` header for a status message of the server
# (no messages, timeout, 503...) whatever it is: a producer's message that carries one is
# dropped unseen, or fails the whole fetch (a 503, a status without a description), again on
# every redelivery. A stored message always comes with its ``$JS.ACK.`` reply subject, which
# the server's own status messages never have: such a message is a message, whatever its headers.
_nats_status_of = JetStreamContext.is_status_msg


def _status_of(msg) -> str | None:
    if msg is not None and msg.reply and msg.reply.startswith("$JS.ACK."):
        return None
    return _nats_status_of(msg)


JetStreamContext.is_status_msg = staticmethod(_status_of)
