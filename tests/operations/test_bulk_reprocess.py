"""Bulk reprocess runs: rate, progress, skipping, cancelling, and resuming after a crash or a
worker killed mid-run (a real Celery worker), with nothing reprocessed twice or skipped."""

from __future__ import annotations

import json

import pytest

from apps.common.jobs import Lock
from apps.eventbus.deadletters.services import dead_letter_mark_resolved
from apps.eventbus.models import DeadLetter, DeadLetterEvent, OutboxEvent
from apps.operations.models import BulkReprocess
from apps.operations.services import (
    BulkReprocessConflict,
    BulkReprocessError,
    bulk_reprocess_cancel,
    bulk_reprocess_run,
    bulk_reprocess_start,
)
from orders_platform.embedded.procs import wait_until
from tests.factories import make_dead_letter
from tests.support import other_session, start_celery_worker, stop_celery_worker


class FakeClock:
    """Time that passes only when the run sleeps; ``on_sleep`` lets a test act mid-run."""

    def __init__(self, on_sleep=None) -> None:
        self.now, self.slept, self.on_sleep = 0.0, [], on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.slept))


class Crash(Exception):
    pass


def reprocess_requests(dead_letter) -> int:
    return dead_letter.history.filter(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).count()


@pytest.mark.django_db
def test_a_run_reprocesses_each_selected_dead_letter_once_at_its_rate(operator):
    rows = [make_dead_letter() for _ in range(5)]
    [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=10)
    fake = FakeClock()

    assert bulk_reprocess_run(run_id=run.pk, sleep=fake.sleep, clock=fake.clock) == "completed"

    run.refresh_from_db()
    assert (run.status, run.reprocessed, run.skipped, run.total) == ("completed", 5, 0, 5)
    assert run.progress == 1.0 and run.finished_at is not None
    assert fake.now == pytest.approx(0.4), "5 items at 10/s: the first at once, then one every 0.1 s"
    for row in rows:
        assert reprocess_requests(row) == 1
        row.refresh_from_db()
        assert row.status == DeadLetter.Status.REPROCESSING
    events = OutboxEvent.objects.filter(subject="operator.dead_letter_reprocess_requested.v1")
    assert events.count() == 5 and all(f'"bulk_run_id":{run.pk}' in e.body.replace(" ", "") for e in events)
    assert all('"actor":"olivia"' in e.body.replace(" ", "") for e in events)
    started = json.loads(OutboxEvent.objects.get(subject="operator.bulk_reprocess_started.v1").body)
    assert (started["run_id"], started["total"], started["rate"], started["actor"]) == (run.pk, 5, 10, "olivia")
    completed = json.loads(OutboxEvent.objects.get(subject="operator.bulk_reprocess_completed.v1").body)
    assert (completed["reprocessed"], completed["skipped"], completed["actor"]) == (5, 0, "")


@pytest.mark.django_db
def test_rows_resolved_or_discarded_meanwhile_are_skipped(operator):
    rows = [make_dead_letter() for _ in range(3)]
    [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=100)
    dead_letter_mark_resolved(dead_letter_id=rows[1].pk, note="handled by a replay")
    fake = FakeClock()

    bulk_reprocess_run(run_id=run.pk, sleep=fake.sleep, clock=fake.clock)

    run.refresh_from_db()
    assert (run.reprocessed, run.skipped) == (2, 1)
    assert run.items.get(dead_letter=rows[1]).outcome == "skipped: resolved"
    assert reprocess_requests(rows[1]) == 0


@pytest.mark.django_db
def test_a_crashed_run_resumes_after_the_last_committed_item(operator):
    rows = [make_dead_letter() for _ in range(6)]
    [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=10)

    def crash_on_third_wait(waits: int) -> None:
        if waits == 3:
            raise Crash("the worker died")

    first = FakeClock(on_sleep=crash_on_third_wait)
    with pytest.raises(Crash):
        bulk_reprocess_run(run_id=run.pk, sleep=first.sleep, clock=first.clock)
    run.refresh_from_db()
    assert run.status == "running" and run.reprocessed == 3

    second = FakeClock()
    assert bulk_reprocess_run(run_id=run.pk, sleep=second.sleep, clock=second.clock) == "completed"

    run.refresh_from_db()
    assert (run.status, run.reprocessed, run.skipped) == ("completed", 6, 0)
    assert [reprocess_requests(row) for row in rows] == [1] * 6, "nothing twice, nothing skipped"


@pytest.mark.django_db(transaction=True)
def test_a_second_worker_on_the_same_run_steps_aside(operator):
    make_dead_letter()
    [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=10)
    with other_session() as other_worker:
        other_worker.execute("SELECT pg_advisory_lock(%s, %s)", [Lock.BULK_REPROCESS, run.pk])

        assert bulk_reprocess_run(run_id=run.pk) == "held by another worker"

    run.refresh_from_db()
    assert run.reprocessed == 0 and run.status == "queued"


@pytest.mark.django_db
def test_a_cancelled_run_stops_after_the_item_in_hand(operator):
    make_dead_letter(), make_dead_letter(), make_dead_letter()
    [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=0.5)

    def cancel_on_first_wait(waits: int) -> None:
        if waits == 1:
            assert bulk_reprocess_cancel(run=run, actor=operator)

    fake = FakeClock(on_sleep=cancel_on_first_wait)

    assert bulk_reprocess_run(run_id=run.pk, sleep=fake.sleep, clock=fake.clock) == "cancelled"

    run.refresh_from_db()
    assert run.status == "cancelled" and run.cancelled_by == operator
    assert run.reprocessed == 2, "the first at once, the second after the wait in which it was cancelled"
    assert not bulk_reprocess_cancel(run=run, actor=operator), "already finished"
    [cancelled] = OutboxEvent.objects.filter(subject="operator.bulk_reprocess_cancelled.v1")
    assert json.loads(cancelled.body)["actor"] == "olivia"
    assert not OutboxEvent.objects.filter(subject="operator.bulk_reprocess_completed.v1").exists()


@pytest.mark.django_db
def test_start_refuses_nothing_to_do_a_bad_rate_and_a_second_active_run(operator, settings):
    resolved = make_dead_letter()
    dead_letter_mark_resolved(dead_letter_id=resolved.pk, note="handled")
    with pytest.raises(BulkReprocessError, match="none of the selected"):
        bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator)
    make_dead_letter()
    settings.BULK_REPROCESS_MAX_RATE = 100
    with pytest.raises(BulkReprocessError, match="rate"):
        bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=101)
    bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=5)
    with pytest.raises(BulkReprocessConflict, match="testing"):
        bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=5)
    assert BulkReprocess.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_survives_its_worker_being_killed(operator):
    """A real worker is killed (SIGKILL) mid-run; a new worker resumes the run on start."""
    rows = [make_dead_letter() for _ in range(40)]
    worker = start_celery_worker()
    try:
        [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=10)
        assert wait_until(lambda: BulkReprocess.objects.get(pk=run.pk).reprocessed >= 5, timeout=60, interval=0.05)
        worker.kill()
        worker.wait()
        stalled = BulkReprocess.objects.get(pk=run.pk)
        assert stalled.status == "running" and 5 <= stalled.reprocessed < 40
    finally:
        stop_celery_worker(worker)

    replacement = start_celery_worker()
    try:
        finished = wait_until(
            lambda: BulkReprocess.objects.get(pk=run.pk).status == "completed", timeout=60, interval=0.2
        )
    finally:
        stop_celery_worker(replacement)

    assert finished, "the new worker resumed and finished the run"
    run.refresh_from_db()
    assert (run.reprocessed, run.skipped, run.total) == (40, 0, 40)
    assert [reprocess_requests(row) for row in rows] == [1] * 40, "nothing reprocessed twice, nothing skipped"
    assert OutboxEvent.objects.filter(subject="redeliver.TESTING.testing").count() == 40
