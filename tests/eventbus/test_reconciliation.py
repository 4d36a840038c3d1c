"""Outbox <-> stream reconciliation: a sent event the stream lost is found and published again,
and a consumer applies it once in all, whether it had processed it before the loss or not; the
window, the per-run bound and the lock; rows with hostile headers; the cockpit's "Run now"
(operators, through a real Celery worker) and its refusal to auditors; the figures on a real
``/metrics`` scrape."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.common.jobs import Lock
from apps.eventbus.headers import RECONCILED_ID
from apps.eventbus.models import OutboxEvent, ProcessedMessage, ReconciliationRun
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.producing.reconciliation import (
    RUN_KEY,
    outbox_reconcile,
    reconciliation_request,
)
from apps.eventbus.tasks import reconcile_outbox
from orders_platform import celery_app
from tests.bus import wait_for
from tests.observability.promql import sample_of
from tests.support import other_session, start_celery_worker, stop_celery_worker
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

CHANGELIST = "admin:eventbus_reconciliationrun_changelist"
RUN_NOW = "admin:eventbus_reconciliationrun_run"
RECONCILED = "operator.outbox_reconciled.v1"


@pytest.fixture
def settled(settings):
    """Rows count as settled as soon as they are sent (the default waits 30 s)."""
    settings.EVENTBUS_RECONCILE = {**settings.EVENTBUS_RECONCILE, "SETTLE_SECONDS": 0}
    return settings


def publish(bus, count: int, *, consume: bool) -> list[OutboxEvent]:
    """``count`` events through the outbox and the relay (and, if ``consume``, the testing consumer
    and the raw one, which keys its ledger on the broker's id)."""
    with transaction.atomic():
        written = [outbox_write(SomethingHappened(value=i, correlation_id=f"agg-{i}")) for i in range(count)]
    with bus.relay():
        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), timeout=30)
    if consume:
        consume_all(bus, "testing", "testing-raw")
        assert Effect.objects.filter(consumer="testing").count() == count
    return [OutboxEvent.objects.get(pk=row.pk) for row in written]


def consume_all(bus, *consumers: str) -> None:
    consumers = consumers or ("testing",)
    with contextlib.ExitStack() as stack:
        for name in consumers:
            stack.enter_context(bus.consumer(name))
        wait_for(lambda: all(bus.drained("TESTING", name) for name in consumers), timeout=30)


def lose(bus, row: OutboxEvent) -> None:
    """The stream loses the message, as JetStream can on a power loss."""
    assert bus.call(lambda js: js.delete_msg("TESTING", row.stream_sequence))
    with pytest.raises(Exception, match=r"no message found|NotFound"):
        bus.get("TESTING", row.stream_sequence)


def figures(run: ReconciliationRun) -> tuple:
    return run.status, run.checked, run.missing, run.republished, run.failed


def reconciled_events() -> list[dict]:
    return [json.loads(row.body) for row in OutboxEvent.objects.filter(subject=RECONCILED).order_by("id")]


def test_a_message_lost_after_it_was_processed_is_republished_and_not_applied_again(bus, settled):
    rows = publish(bus, 5, consume=True)
    lost = rows[2]
    lose(bus, lost)  # the stream's de-duplication memory still holds its id: the copy goes without it

    run = outbox_reconcile()

    assert figures(run) == ("completed", 5, 1, 1, 0)
    assert run.republished_ids == [lost.message_id] and run.complete and run.triggered_by is None
    lost.refresh_from_db()
    again = bus.get("TESTING", lost.stream_sequence)
    assert again.data.decode() == lost.body
    assert again.headers[RECONCILED_ID] == lost.message_id and "Nats-Msg-Id" not in again.headers
    assert again.headers["Event-Type"] == "testing.happened"  # the row's own headers travel again
    (event,) = reconciled_events()
    assert (event["run_id"], event["checked"], event["missing"], event["republished"], event["failed"]) == (
        run.pk, 5, 1, 1, 0,
    )  # fmt: skip
    assert event["republished_message_ids"] == [lost.message_id] and event["actor"] == ""

    consume_all(bus, "testing", "testing-raw")  # both are handed the copy: their ledgers know the event
    assert sorted(Effect.objects.filter(message_id=lost.message_id).values_list("consumer", flat=True)) == [
        "testing", "testing-raw",
    ]  # fmt: skip
    assert Effect.objects.count() == 10

    second = outbox_reconcile()
    assert figures(second) == ("completed", 5, 0, 0, 0), "the copy is accepted in place of the lost message"
    assert len(reconciled_events()) == 1, "a run that finds nothing missing is not an operator event"


def test_a_message_lost_before_it_was_processed_is_republished_with_its_id_and_processed_once(bus, settled):
    rows = publish(bus, 4, consume=False)
    lost = rows[1]
    lose(bus, lost)
    bus.server.restart()  # as after a power loss: the stream rebuilds its de-duplication memory from what it kept

    run = outbox_reconcile()

    assert figures(run) == ("completed", 4, 1, 1, 0)
    lost.refresh_from_db()
    again = bus.get("TESTING", lost.stream_sequence)
    assert again.headers["Nats-Msg-Id"] == lost.message_id and RECONCILED_ID not in again.headers
    consume_all(bus)
    assert sorted(Effect.objects.values_list("message_id", flat=True)) == sorted(row.message_id for row in rows)
    assert ProcessedMessage.objects.filter(consumer="testing", message_id=lost.message_id).count() == 1
    assert figures(outbox_reconcile()) == ("completed", 4, 0, 0, 0)


def sent_row(key: str, *, seq: int, subject: str = "testing.happened.v1", body: str | None = None, headers=None):
    """An outbox row the relay marked sent at ``seq`` (written here as it would be in the table)."""
    return OutboxEvent.objects.create(
        message_id=key,
        subject=subject,
        aggregate_id=key,
        body=body if body is not None else SomethingHappened(value=1, message_id=key).to_json().decode(),
        headers={"Content-Type": "application/json"} if headers is None else headers,
        sent_at=timezone.now() - timedelta(seconds=1),
        stream_sequence=seq,
    )


def test_rows_with_hostile_headers_fail_alone_and_the_run_goes_on(bus, settled):
    (present,) = publish(bus, 1, consume=False)
    # republished:
    sent_row("plain", seq=10_001)
    # Nats-* headers made JetStream act once (a roll-up would purge the subject): dropped
    sent_row("rollup", seq=10_002, headers={"Nats-Rollup": "all", "Nats-Expected-Last-Sequence": "1", "X-Note": "kept"})
    sent_row("reused", seq=present.stream_sequence)  # the sequence now holds another message
    failing = [
        sent_row("crlf", seq=10_003, headers={"X-Bad": "a\r\nInjected: yes"}),
        sent_row("not-an-object", seq=10_004, headers=["a", "b"]),
        sent_row("too-big", seq=10_005, body="x" * (2 * 1024 * 1024)),
        sent_row("nowhere", seq=10_006, subject="nowhere.at.all.v1"),
        sent_row("spaced", seq=10_007, subject="testing.x y"),  # captured by testing.>, yet no subject on the wire
    ]

    run = outbox_reconcile()

    assert figures(run) == ("completed", 9, 7, 3, 5)
    assert sorted(run.republished_ids) == ["plain", "reused", "rollup"]
    for reason in ("control character", "not a JSON object", "max_payload", "no declared stream", "published to"):
        assert reason in run.error, run.error
    stored = [
        bus.get("TESTING", seq) for seq in range(1, bus.call(lambda js: js.stream_info("TESTING")).state.last_seq + 1)
    ]
    assert len(stored) == 4, "the original and three copies: no roll-up purged anything"
    assert all("Injected" not in (message.headers or {}) for message in stored)
    rollup = next(message for message in stored if (message.headers or {}).get("Nats-Msg-Id") == "rollup")
    assert rollup.headers["X-Note"] == "kept" and "Nats-Rollup" not in rollup.headers
    for row in failing:
        row.refresh_from_db()
        assert row.stream_sequence >= 10_003, "a failed row keeps its sequence (checked again next run)"
    assert figures(outbox_reconcile())[1:] == (9, 4, 0, 5), "the failures stay visible until fixed"


def test_the_window_and_the_per_run_bound_walk_the_rows_across_runs(bus, settled):
    settled.EVENTBUS_RECONCILE = {**settled.EVENTBUS_RECONCILE, "SETTLE_SECONDS": 60, "MAX_ROWS": 2}
    rows = publish(bus, 6, consume=False)
    now = timezone.now()
    old, *inside, fresh = rows
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=2), sent_at=now - timedelta(days=2))
    OutboxEvent.objects.filter(pk__in=[row.pk for row in inside]).update(
        created_at=now - timedelta(minutes=5), sent_at=now - timedelta(minutes=4)
    )  # `fresh` was sent less than the settle delay ago
    ids = [row.pk for row in inside]

    walked = [outbox_reconcile() for _ in range(4)]

    assert [(run.first_id, run.last_id, run.checked, run.complete) for run in walked] == [
        (ids[0], ids[1], 2, False),
        (ids[2], ids[3], 2, False),
        (None, None, 0, True),  # the rest of the window is only the unsettled row
        (ids[0], ids[1], 2, False),  # and round again
    ]
    assert all(run.missing == 0 and run.failed == 0 for run in walked)
    fresh.refresh_from_db()
    assert walked[0].window_start > now - timedelta(days=1) and walked[0].window_end < fresh.sent_at


def test_beat_runs_the_reconciliation_every_few_minutes():
    entry = celery_app.conf.beat_schedule["reconcile-outbox"]
    assert entry["task"] == reconcile_outbox.name and 10 <= entry["schedule"] <= 3600


@pytest.mark.django_db
def test_two_runs_never_overlap_and_an_interrupted_run_is_closed(operator):
    interrupted = ReconciliationRun.objects.create(status=ReconciliationRun.Status.RUNNING)
    queued, created = reconciliation_request(actor=operator)
    again, created_again = reconciliation_request(actor=operator)
    assert created and not created_again and again.pk == queued.pk, "a second click queues no second run"
    interrupted.refresh_from_db()
    assert interrupted.status == "failed" and "interrupted" in interrupted.error

    with other_session() as other_worker:
        other_worker.execute("SELECT pg_advisory_lock(%s, %s)", [Lock.RECONCILIATION, RUN_KEY])
        skipped = outbox_reconcile(run_id=queued.pk)
        assert (skipped.pk, skipped.status) == (queued.pk, "skipped") and "another reconciliation" in skipped.error
        assert outbox_reconcile().status == "skipped", "the schedule's run steps aside too"
    run = outbox_reconcile()  # the lock is free again; nothing was written in the window
    assert figures(run) == ("completed", 0, 0, 0, 0) and run.complete
    (requested,) = OutboxEvent.objects.filter(subject="operator.outbox_reconciliation_requested.v1")
    assert json.loads(requested.body)["actor"] == "olivia"


@pytest.mark.django_db
def test_the_other_jobs_holding_their_locks_do_not_stop_a_reconciliation():
    """One lock kind per job (apps/common/jobs.py): a replay run #1 once held (7_411_003, 1),
    the very lock of a reconciliation run, and every reconciliation was skipped meanwhile."""
    with other_session() as other_worker:
        for kind in (Lock.REPLAY, Lock.BULK_REPROCESS):
            other_worker.execute("SELECT pg_advisory_lock(%s, %s)", [kind, RUN_KEY])
        assert outbox_reconcile().status == "completed"


@pytest.mark.slow
def test_an_operator_runs_it_now_through_the_worker_and_an_auditor_cannot(client, bus, settled, operator, auditor):
    (row,) = publish(bus, 1, consume=False)
    lose(bus, row)
    client.force_login(auditor)
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "cockpit-run-reconciliation" not in page
    assert client.post(reverse(RUN_NOW)).status_code == 403
    assert not ReconciliationRun.objects.exists()

    worker = start_celery_worker(NATS_URL=bus.server.url, EVENTBUS_RECONCILE_SETTLE_SECONDS="0")
    try:
        client.force_login(operator)
        assert 'id="cockpit-run-reconciliation"' in client.get(reverse(CHANGELIST)).content.decode()
        response = client.post(reverse(RUN_NOW), follow=True)
        assert "queued" in response.content.decode()
        run = ReconciliationRun.objects.get()
        assert run.triggered_by == operator
        wait_for(lambda: ReconciliationRun.objects.get().status == "completed", timeout=60)
    finally:
        stop_celery_worker(worker)
    run.refresh_from_db()
    assert figures(run) == ("completed", 1, 1, 1, 0)
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "olivia" in page and "Completed" in page
    detail = client.get(reverse("admin:eventbus_reconciliationrun_change", args=[run.pk])).content.decode()
    assert row.message_id in detail
    (requested,) = OutboxEvent.objects.filter(subject="operator.outbox_reconciliation_requested.v1")
    assert json.loads(requested.body)["actor"] == "olivia"
    (event,) = reconciled_events()
    assert event["actor"] == "olivia" and event["republished_message_ids"] == [row.message_id]


def test_the_last_runs_figures_are_on_the_webs_metrics_in_either_mode(live_server, monkeypatch, tmp_path):
    def scrape() -> str:
        with urllib.request.urlopen(f"{live_server.url}/metrics", timeout=10) as response:
            return response.read().decode()

    assert "eventbus_reconcile_last_run_checked" not in scrape(), "no run yet: nothing to report"
    finished = timezone.now()
    ReconciliationRun.objects.create(
        status="completed", started_at=finished, finished_at=finished, checked=120, missing=2, republished=1, failed=1
    )
    ReconciliationRun.objects.create(status="failed", started_at=finished, finished_at=finished + timedelta(seconds=5))

    for multiprocess in (False, True):  # a single process, then gunicorn's workers (make run, the deployments)
        if multiprocess:
            monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        text = scrape()
        assert sample_of(text, "eventbus_reconcile_last_run_checked") == 120
        assert sample_of(text, "eventbus_reconcile_last_run_missing") == 2
        assert sample_of(text, "eventbus_reconcile_last_run_republished") == 1
        assert sample_of(text, "eventbus_reconcile_last_run_failed") == 1
        assert sample_of(text, "eventbus_reconcile_last_run_succeeded") == 0
        assert sample_of(text, "eventbus_reconcile_last_run_timestamp_seconds") == pytest.approx(
            finished.timestamp() + 5
        )
        assert sample_of(text, "eventbus_reconcile_last_success_timestamp_seconds") == pytest.approx(
            finished.timestamp()
        )
