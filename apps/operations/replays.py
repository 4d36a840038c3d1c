"""Replays from the cockpit: one stream's history through one consumer's handlers
(``apps.eventbus.consuming.replay``, the machinery of ``manage.py replay``), started by an
operator, run by a Celery task, cancellable, audited.

How the async replay meets the ORM: the task runs ``replay()`` with ``asyncio.run``; the
replay calls ``progress`` after every batch in the thread that ran the batch's handlers, never
on the event loop, so the callback writes the run's position, last sequence and counts with
the ORM directly, in one conditional UPDATE that also says whether the run is still running
(0 rows: cancelled, so the callback returns False and the replay stops after that batch).

A worker that dies leaves its run ``running``. The next worker to start (``worker_ready``) and
the periodic resume (every minute) queue the task of every active run again; the run goes on
after its last written position (a batch replayed twice is harmless: the idempotency ledger
makes its messages duplicates, counted as such). An advisory lock keeps one worker per run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.common import jobs
from apps.common.jobs import Lock
from apps.eventbus.bounds import clean_text, log_value
from apps.eventbus.consuming.replay import replay
from apps.eventbus.events import actor_fields
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.registry import registry

from .events import ReplayCancelled, ReplayCompleted, ReplayEnded, ReplayFailed, ReplayStarted
from .models import ReplayRun

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 500
MAX_BATCH = 1000  # messages per fetch and per transaction of the handlers
MAX_SEQUENCE = 2**63 - 1  # a JetStream sequence is a uint64; the column a signed bigint


class ReplayError(ValueError):
    """The replay asked for cannot be started; ``field`` names the input at fault (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ReplayConflict(ReplayError):
    """The consumer already has a replay queued or running."""


def replay_start(
    *,
    consumer: str,
    stream: str,
    actor,
    from_seq: int | None = None,
    since: datetime | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> ReplayRun:
    """Queue a replay of ``stream`` through ``consumer``'s handlers from sequence ``from_seq``,
    from time ``since`` or (neither) from the stream's first message, and record who asked.
    Raises :class:`ReplayError` for a bad request, :class:`ReplayConflict` when the consumer
    already has an active replay. The task is queued once the transaction commits."""
    _check(consumer, stream, from_seq, since, batch_size)
    try:
        with transaction.atomic():
            run = ReplayRun.objects.create(
                consumer=consumer, stream=stream, from_seq=from_seq, since=since, batch_size=batch_size,
                created_by=actor,
            )  # fmt: skip
            outbox_write(
                ReplayStarted(
                    run_id=run.pk, consumer=consumer, stream=stream, from_seq=from_seq, since=since,
                    batch_size=batch_size, **actor_fields(actor),
                )
            )  # fmt: skip
            transaction.on_commit(lambda: _enqueue([run.pk]))
    except IntegrityError:
        if ReplayRun.objects.filter(consumer=consumer, status__in=ReplayRun.ACTIVE).exists():
            raise ReplayConflict(
                f"a replay through {consumer} is already queued or running; wait for it or cancel it", "consumer"
            ) from None
        raise
    return run


def _check(consumer: str, stream: str, from_seq: int | None, since: datetime | None, batch_size: int) -> None:
    if consumer not in registry.consumers:
        known = ", ".join(sorted(registry.consumers))
        raise ReplayError(f"no consumer named {log_value(consumer, 100)!r} is declared (known: {known})", "consumer")
    streams = registry.streams_of(registry.consumer(consumer))
    if stream not in streams:
        raise ReplayError(
            f"{consumer} reads nothing from stream {log_value(stream, 100)!r}; it reads {', '.join(sorted(streams))}",
            "stream",
        )
    if from_seq is not None and since is not None:
        raise ReplayError("start from a sequence or from a time, not both")
    if from_seq is not None and not 1 <= from_seq <= MAX_SEQUENCE:
        raise ReplayError("a stream sequence starts at 1", "from_seq")
    if since is not None:
        if timezone.is_naive(since):
            raise ReplayError("give the time with its time zone", "since")
        if since > timezone.now():
            raise ReplayError("the time is in the future: nothing was stored then yet", "since")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ReplayError(f"the batch size must be between 1 and {MAX_BATCH}", "batch_size")


def _enqueue(run_ids: list[int]) -> None:
    from .tasks import run_replay

    for run_id in run_ids:
        jobs.queue(run_replay, run_id, what="replay")


@transaction.atomic
def replay_cancel(*, run: ReplayRun, actor) -> bool:
    """Stop an active run after the batch in hand. False if it had already finished."""
    cancelled = ReplayRun.objects.filter(pk=run.pk, status__in=ReplayRun.ACTIVE).update(
        status=ReplayRun.Status.CANCELLED, cancelled_by=actor, finished_at=timezone.now()
    )
    if cancelled:
        _record_end(ReplayCancelled, ReplayRun.objects.get(pk=run.pk), actor)
    return bool(cancelled)


def _record_end(event: type[ReplayEnded], run: ReplayRun, actor, **extra) -> None:
    outbox_write(
        event(
            run_id=run.pk, consumer=run.consumer, stream=run.stream, position=run.position, last_seq=run.last_seq,
            counts=run.counts, **actor_fields(actor), **extra,
        )
    )  # fmt: skip


def replay_run(*, run_id: int) -> str:
    """Replay a run to its end (or its cancel), writing its progress after every batch. Safe to
    call twice at once (the second returns at once) and after a crash (it goes on after the last
    written position). A failure (NATS unreachable, the stream missing) marks the run failed."""
    with jobs.held(Lock.REPLAY, run_id) as mine:
        return _run(run_id) if mine else "held by another worker"


def _run(run_id: int) -> str:
    started = ReplayRun.objects.filter(pk=run_id, status__in=ReplayRun.ACTIVE).update(
        status=ReplayRun.Status.RUNNING, started_at=Coalesce("started_at", Value(timezone.now()))
    )  # a resumed run keeps its first start
    if not started:
        return "not active"
    run = ReplayRun.objects.get(pk=run_id)
    done_before = Counter(run.counts)  # of the runs of this task before a crash
    reached = {"position": run.position, "last": run.last_seq, "stopped": False}

    def progress(position: int, last: int, outcomes: Counter) -> bool:
        """Called in the replay's handler thread after each batch: write, and go on while running."""
        reached.update(position=max(position, reached["position"]), last=last)
        figures = {"position": reached["position"], "last_seq": last, "counts": dict(done_before + outcomes)}
        if ReplayRun.objects.filter(pk=run.pk, status=ReplayRun.Status.RUNNING).update(**figures):
            return True
        # Cancelled during this batch: the row still shows where the run really stopped.
        ReplayRun.objects.filter(pk=run.pk, status=ReplayRun.Status.CANCELLED).update(**figures)
        reached["stopped"] = True
        return False

    # After a crash: on after the last written position (its batch is done), from anywhere else as asked.
    resume_at = run.position + 1 if run.position else None
    try:
        spec = registry.consumer(run.consumer)
        outcomes = asyncio.run(
            replay(
                spec, run.stream, from_seq=resume_at or run.from_seq, since=None if resume_at else run.since,
                batch_size=run.batch_size, progress=progress,
            )
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - whatever stops it is the run's outcome, shown to the operator
        return _fail(run_id, exc)
    if reached["stopped"]:
        return "cancelled"
    return _complete(run_id, dict(done_before + outcomes), reached["last"])


@transaction.atomic
def _complete(run_id: int, counts: dict[str, int], last: int) -> str:
    """Mark the run completed: it read the stream up to ``last``, its last sequence when the
    replay started (a run that found nothing to read keeps what it had)."""
    run = ReplayRun.objects.select_for_update().get(pk=run_id)
    if run.status != ReplayRun.Status.RUNNING:
        return "cancelled"
    run.status, run.finished_at, run.counts = ReplayRun.Status.COMPLETED, timezone.now(), counts
    run.last_seq = max(run.last_seq, last)
    run.position = run.last_seq
    run.save(update_fields=["status", "finished_at", "counts", "last_seq", "position"])
    _record_end(ReplayCompleted, run, actor=None)
    return "completed"


def _fail(run_id: int, exc: Exception) -> str:
    error = clean_text(f"{type(exc).__name__}: {exc}", ReplayRun.MAX_ERROR)
    logger.warning("replay #%s failed: %s", run_id, log_value(error))
    with transaction.atomic():
        run = ReplayRun.objects.select_for_update().get(pk=run_id)
        if run.status not in ReplayRun.ACTIVE:
            return run.status  # cancelled meanwhile: the cancel is the outcome
        run.status, run.finished_at, run.error = ReplayRun.Status.FAILED, timezone.now(), error
        run.save(update_fields=["status", "finished_at", "error"])
        _record_end(ReplayFailed, run, actor=None, error=error)
    return "failed"


def replay_resume_all() -> list[int]:
    """Queue the task of every active run (a duplicate finds the run's lock held and returns)."""
    ids = list(ReplayRun.objects.filter(status__in=ReplayRun.ACTIVE).values_list("pk", flat=True))
    _enqueue(ids)
    return ids
