"""The development platform's embedded servers, kept in the data folder across restarts.

Any process started with ``DATABASE_URL``/``NATS_URL`` unset calls these: the first one
starts the servers, the others adopt them. ``make stop`` (``python -m orders_platform.embedded stop``)
or the end of ``make run`` stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import EmbeddedServiceError
from .nats import NatsServer, check_sync_interval
from .postgres import PostgresServer

DATABASE_NAME = "orders_platform"


def postgres_server(data_dir: Path) -> PostgresServer:
    return PostgresServer(data_dir / "postgres")


# The streams carry money: an event JetStream acknowledged must survive a power loss, so every
# write is flushed to disk before it is acknowledged (nats-server's default, every 2 minutes,
# loses what was acknowledged since: Jepsen's NATS 2.12.1 analysis, nats-server#7564). Measured
# here: ~4k pipelined publishes/s instead of ~20k, far above what the saga needs.
DEFAULT_SYNC_INTERVAL = "always"


def sync_interval() -> str:
    value = os.environ.get("NATS_SYNC_INTERVAL", "").strip() or DEFAULT_SYNC_INTERVAL
    try:
        return check_sync_interval(value)
    except ValueError as exc:
        raise EmbeddedServiceError(f"NATS_SYNC_INTERVAL: {exc}") from None


def nats_server(data_dir: Path) -> NatsServer:
    return NatsServer(data_dir / "nats", name="orders-platform-dev", sync_interval=sync_interval())


def database_url(data_dir: Path) -> str:
    """Start or adopt the development PostgreSQL; return the URL of the platform's database."""
    with _lock(data_dir):
        server = postgres_server(data_dir)
        started = not server.is_running()
        server.start()
        server.create_database(DATABASE_NAME)
    if started:
        _say(f"started embedded PostgreSQL on 127.0.0.1:{server.port} (data: {server.data_dir})")
    return server.url(DATABASE_NAME)


def nats_url(data_dir: Path) -> str:
    """Start or adopt the development nats-server (JetStream on); return its URL."""
    with _lock(data_dir):
        server = nats_server(data_dir)
        started = not server.is_running()
        server.start()
    if started:
        _say(f"started embedded nats-server on {server.url} (store: {server.store_dir})")
    return server.url


def stop(data_dir: Path, *, postgres: bool = True, nats: bool = True) -> list[str]:
    """Stop the embedded servers (those selected) running on this data folder; name what was stopped."""
    stopped = []
    servers = [("nats-server", nats_server(data_dir), nats), ("PostgreSQL", postgres_server(data_dir), postgres)]
    with _lock(data_dir):
        for name, server, selected in servers:
            if selected and server.is_running():
                server.stop()
                stopped.append(name)
    return stopped


@contextlib.contextmanager
def _lock(data_dir: Path) -> Iterator[None]:
    """Serialise start/stop between processes (released by the kernel if the holder dies)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".embedded.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _say(message: str) -> None:
    print(f"[embedded] {message}", file=sys.stderr, flush=True)
