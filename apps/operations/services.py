"""Bulk work on dead letters: a reprocess run (start, run from a Celery task, cancel) and a
bulk discard (done in the request)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.common import jobs
from apps.common.jobs import Lock
from apps.eventbus.deadletters.services import (
    REPROCESSABLE,
    DeadLetterStateError,
    dead_letter_discard,
    dead_letter_reprocess,
)
from apps.eventbus.events import actor_fields
from apps.eventbus.models import DeadLetter
from apps.eventbus.producing.outbox import outbox_write

from .events import BulkReprocessCancelled, BulkReprocessCompleted, BulkReprocessEnded, BulkReprocessStarted
from .models import BulkReprocess, BulkReprocessItem

logger = logging.getLogger(__name__)

CANCEL_CHECK_EVERY = 1.0  # seconds
MAX_BULK_DISCARD = 5000  # discarding is done in the request; beyond this, narrow the filter


class BulkReprocessConflict(Exception):
    """A consumer already has a bulk reprocess queued or running."""


class BulkReprocessError(ValueError):
    """Nothing to reprocess, or a rate out of bounds."""


class BulkDiscardError(ValueError):
    """More open dead letters than one request discards (``MAX_BULK_DISCARD``)."""


def bulk_reprocess_start(
    *, dead_letters: QuerySet[DeadLetter], actor, rate: float | None = None, description: str = ""
) -> list[BulkReprocess]:
    """Freeze the reprocessable dead letters of ``dead_letters`` into one run per consumer and
    queue them. All or nothing: raises :class:`BulkReprocessConflict` if one of those
    consumers already has an active run, :class:`BulkReprocessError` if nothing applies."""
    rate = float(rate or settings.BULK_REPROCESS_RATE)
    if not 0 < rate <= settings.BULK_REPROCESS_MAX_RATE:
        raise BulkReprocessError(f"the rate must be between 0 and {settings.BULK_REPROCESS_MAX_RATE} per second")
    selection = dead_letters.filter(status__in=REPROCESSABLE).order_by()
    per_consumer: dict[str, list[int]] = {}
    for consumer, pk in selection.values_list("consumer", "pk").order_by("consumer", "pk"):
        per_consumer.setdefault(consumer, []).append(pk)
    if not per_consumer:
        raise BulkReprocessError("none of the selected dead letters can be reprocessed (resolved or discarded)")
    try:
        with transaction.atomic():
            runs = []
            for consumer, ids in per_consumer.items():
                run = BulkReprocess.objects.create(
                    consumer=consumer, rate=rate, total=len(ids), created_by=actor, description=description[:300]
                )
                BulkReprocessItem.objects.bulk_create(
                    [BulkReprocessItem(run=run, dead_letter_id=pk) for pk in ids], batch_size=5000
                )
                outbox_write(
                    BulkReprocessStarted(
                        run_id=run.pk, consumer=consumer, total=run.total, rate=rate, description=run.description,
                        **actor_fields(actor),
                    )
                )  # fmt: skip
                runs.append(run)
            transaction.on_commit(lambda: _enqueue([run.pk for run in runs]))
    except IntegrityError as exc:
        busy = sorted(
            BulkReprocess.objects.filter(consumer__in=per_consumer, status__in=BulkReprocess.ACTIVE).values_list(
                "consumer", flat=True
            )
        )
        if busy:
            raise BulkReprocessConflict(
                f"a bulk reprocess is already queued or running for {', '.join(busy)}; wait for it or cancel it"
            ) from None
        raise exc
    return runs


def _enqueue(run_ids: list[int]) -> None:
    from .tasks import run_bulk_reprocess

    for run_id in run_ids:
        jobs.queue(run_bulk_reprocess, run_id, what="bulk reprocess")


@transaction.atomic
def bulk_reprocess_cancel(*, run: BulkReprocess, actor) -> bool:
    """Stop an active run after the item in hand. False if it had already finished."""
    cancelled = BulkReprocess.objects.filter(pk=run.pk, status__in=BulkReprocess.ACTIVE).update(
        status=BulkReprocess.Status.CANCELLED, cancelled_by=actor, finished_at=timezone.now()
    )
    if cancelled:
        _record_end(BulkReprocessCancelled, run.pk, actor)
    return bool(cancelled)


def _record_end(event: type[BulkReprocessEnded], run_id: int, actor) -> None:
    run = BulkReprocess.objects.get(pk=run_id)
    outbox_write(
        event(
            run_id=run.pk, consumer=run.consumer, total=run.total, reprocessed=run.reprocessed, skipped=run.skipped,
            **actor_fields(actor),
        )
    )  # fmt: skip


def bulk_reprocess_run(
    *, run_id: int, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
) -> str:
    """Work through a run's remaining items at its rate. Safe to call twice at once (the second
    returns at once) and after a crash (it resumes after the last committed item)."""
    with jobs.held(Lock.BULK_REPROCESS, run_id) as mine:
        return _run(run_id, sleep, clock) if mine else "held by another worker"


def _run(run_id: int, sleep, clock) -> str:
    run = BulkReprocess.objects.filter(pk=run_id).select_related("created_by").first()
    if run is None or run.status not in BulkReprocess.ACTIVE:
        return "not active"
    BulkReprocess.objects.filter(pk=run.pk, status__in=BulkReprocess.ACTIVE).update(
        status=BulkReprocess.Status.RUNNING, started_at=Coalesce("started_at", Value(timezone.now()))
    )  # a resumed run keeps its first start
    interval = 1.0 / run.rate
    next_at = clock()
    checked_at = clock()
    todo = BulkReprocessItem.objects.filter(run_id=run.pk, done_at__isnull=True).order_by("dead_letter_id")
    while True:
        if clock() - checked_at >= CANCEL_CHECK_EVERY:
            checked_at = clock()
            if BulkReprocess.objects.filter(pk=run.pk, status__in=BulkReprocess.ACTIVE).count() == 0:
                return "cancelled"
        item = todo.values_list("pk", flat=True).first()
        if item is None:
            return _complete(run) or "cancelled"
        wait = next_at - clock()
        if wait > 0:
            sleep(wait)
        next_at = max(next_at, clock()) + interval
        _reprocess_item(run, item)


@transaction.atomic
def _complete(run: BulkReprocess) -> str | None:
    """Mark the run completed (None if it was cancelled meanwhile) and record the outcome."""
    now = timezone.now()
    if not BulkReprocess.objects.filter(pk=run.pk, status__in=BulkReprocess.ACTIVE).update(
        status=BulkReprocess.Status.COMPLETED, finished_at=now
    ):
        return None
    _record_end(BulkReprocessCompleted, run.pk, actor=None)
    return "completed"


@transaction.atomic
def _reprocess_item(run: BulkReprocess, item_pk: int) -> None:
    """One item, all or nothing: its dead letter reprocessed (or skipped), itself marked done,
    the run's counters moved on."""
    item = BulkReprocessItem.objects.select_for_update().select_related("dead_letter").get(pk=item_pk)
    if item.done_at is not None:
        return
    try:
        dead_letter_reprocess(dead_letter=item.dead_letter, actor=run.created_by, bulk_run_id=run.pk)
        item.outcome, counter = "reprocess requested", "reprocessed"
    except DeadLetterStateError:
        item.dead_letter.refresh_from_db(fields=["status"])
        item.outcome, counter = f"skipped: {item.dead_letter.status.replace('_', ' ')}", "skipped"
    item.done_at = timezone.now()
    item.save(update_fields=["done_at", "outcome"])
    BulkReprocess.objects.filter(pk=run.pk).update(**{counter: F(counter) + 1})


def bulk_reprocess_resume_all() -> list[int]:
    """Queue the task of every active run (a duplicate finds the run's lock held and returns)."""
    ids = list(BulkReprocess.objects.filter(status__in=BulkReprocess.ACTIVE).values_list("pk", flat=True))
    _enqueue(ids)
    return ids


def bulk_discard(*, dead_letters: QuerySet[DeadLetter], actor, reason: str) -> int:
    """Discard the open dead letters of ``dead_letters`` (resolved and discarded ones are not),
    one by one in the order of their ids, each through ``dead_letter_discard`` (its own
    transaction and audit event); one resolved meanwhile is skipped. Returns how many were
    discarded. Raises :class:`BulkDiscardError`, discarding none, beyond ``MAX_BULK_DISCARD``."""
    targets = dead_letters.filter(status__in=REPROCESSABLE)
    count = targets.count()
    if count > MAX_BULK_DISCARD:
        raise BulkDiscardError(f"{count} dead letters: narrow the filter to {MAX_BULK_DISCARD} at most.")
    discarded = 0
    for dead_letter in targets.order_by("pk").iterator():
        try:
            dead_letter_discard(dead_letter=dead_letter, actor=actor, reason=reason)
            discarded += 1
        except DeadLetterStateError:
            continue  # resolved meanwhile
    return discarded
