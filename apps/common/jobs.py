"""The cockpit's background jobs (bulk reprocess, replay and reconciliation runs): queueing a
run's Celery task, and the PostgreSQL advisory lock that keeps a run to one worker,
``pg_advisory_lock(kind, key)``.

Every kind is declared here, once: two jobs that picked the same number would block each other
(a replay run #1 and the reconciliation's run lock were once both ``(7_411_003, 1)``). A session
lock is held by the connection, so a worker that dies lets go of it with its connection.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Iterator

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


def queue(task, run_id: int, *, what: str) -> bool:
    """Send ``task`` for the run. When the broker does not take it, log and return False: the
    job's periodic resume (or next scheduled run) picks the run up, nothing is lost."""
    try:
        task.delay(run_id)
    except Exception:
        logger.exception("%s #%s: could not queue its task; it will be picked up later", what, run_id)
        return False
    return True


@enum.unique
class Lock(enum.IntEnum):
    """The first key; the second is the job's own (a run's id)."""

    BULK_REPROCESS = 7_411_002  # one worker per bulk reprocess run
    REPLAY = 7_411_003  # one worker per replay run
    RECONCILIATION = 7_411_004  # one reconciliation at a time (key 1), one request at a time (key 2)


def try_lock(kind: Lock, key: int) -> bool:
    """Take the session lock if it is free; never waits."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [int(kind), key])
        return cursor.fetchone()[0]


def unlock(kind: Lock, key: int) -> None:
    """Let go of a session lock; a lost connection took it along already (nothing to raise)."""
    with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [int(kind), key])


@contextlib.contextmanager
def held(kind: Lock, key: int) -> Iterator[bool]:
    """Whether this session got the lock for the block (released after it when it did)."""
    got = try_lock(kind, key)
    try:
        yield got
    finally:
        if got:
            unlock(kind, key)


def lock_for_transaction(kind: Lock, key: int) -> None:
    """Wait for the lock and hold it until the current transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [int(kind), key])
