"""Real PostgreSQL and nats-server processes started from pip-installed wheels.

Used three ways: by the development settings when ``DATABASE_URL`` / ``NATS_URL``
are unset, by ``manage.py runplatform`` (``make run``), and by the test fixtures,
which also use the fault helpers (stop, kill -9, pause, restart keeping the store).
"""

from .errors import EmbeddedServiceError
from .nats import NatsCluster, NatsServer, nats_server_binary
from .postgres import PostgresServer

__all__ = [
    "EmbeddedServiceError",
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "nats_server_binary",
]
