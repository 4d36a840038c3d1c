"""The test session's PostgreSQL: started once per process by the test settings, unless
``TEST_DATABASE_URL`` names one, and stopped and deleted when the process exits."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from .postgres import PostgresServer

# Durability is not under test here; speed is.
FAST_OPTIONS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@cache
def session_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="orders-platform-test-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@cache
def session_postgres() -> PostgresServer:
    server = PostgresServer(session_dir() / "postgres", options=FAST_OPTIONS).start()
    atexit.register(server.stop, mode="immediate")  # registered after rmtree, so it runs first
    return server


def database_url() -> str:
    """``TEST_DATABASE_URL``, or the session server's URL, which is then exported as
    ``TEST_DATABASE_URL`` so that child processes of the tests use the same server."""
    url = os.environ.get("TEST_DATABASE_URL") or session_postgres().url()
    os.environ["TEST_DATABASE_URL"] = url
    return url
