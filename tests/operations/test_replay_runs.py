"""Replays from the cockpit: an operator starts one from the admin, a real Celery worker runs it
over a real nats-server through the consumer's idempotency ledger, its progress is written after
every batch; one is cancelled mid-run; a crashed run goes on after its last written batch; a
missing stream fails the run. Every step is in the audit trail; auditors only look; bad
requests are form errors."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from apps.common import jobs
from apps.common.jobs import Lock
from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.operations.models import ReplayRun
from apps.operations.replays import ReplayConflict, ReplayError, replay_run, replay_start
from tests.bus import wait_for
from tests.support import start_celery_worker, stop_celery_worker
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

START = reverse("admin:operations_replayrun_start")


def publish_all(bus, events) -> None:
    """Publish ``events`` to the stream in order, on one connection."""

    async def publish(js):
        for event in events:
            await js.publish(event.subject, event.to_json(), headers={"Nats-Msg-Id": event.message_id})

    bus.call(publish)


def audit_events(subject: str) -> list[dict]:
    return [json.loads(row.body) for row in OutboxEvent.objects.filter(subject=subject).order_by("id")]


def form_errors(response) -> dict[str | None, list[str]]:
    form = response.context["form"]
    return {**{field: list(errors) for field, errors in form.errors.items()}}


def replay_worker_done(run: ReplayRun) -> bool:
    """The run's advisory lock is free: no worker is replaying it."""
    with jobs.held(Lock.REPLAY, run.pk) as free:
        return free


@pytest.mark.slow
def test_an_operator_replays_a_stream_from_the_admin_then_cancels_a_second_replay(declared, client, operator):
    # Given 30 events in the stream, 20 of them already in the testing consumer's ledger (the other
    # 10 lost their effects and ledger rows, say in a restore from backup).
    events = [SomethingHappened(value=i) for i in range(30)]
    publish_all(declared, events)
    ProcessedMessage.objects.bulk_create(
        ProcessedMessage(consumer="testing", message_id=e.message_id, subject=e.subject) for e in events[:20]
    )
    client.force_login(operator)
    worker = start_celery_worker(NATS_URL=declared.server.url)
    try:
        # The consumers page links each consumer's replay, prefilled.
        consumers_page = client.get(reverse("admin:operations_consumer_changelist")).content.decode()
        assert f"{START}?consumer=testing&amp;stream=TESTING" in consumers_page

        # When she starts a replay of the whole stream in batches of 7.
        response = client.post(START, {"consumer": "testing", "stream": "TESTING", "batch_size": "7"})
        run = ReplayRun.objects.get()
        assert response.status_code == 302
        assert response.url == reverse("admin:operations_replayrun_change", args=[run.pk])
        wait_for(lambda: ReplayRun.objects.get(pk=run.pk).status == "completed", timeout=30)

        # Then the 10 lost messages are handled again, the 20 others are duplicates, nothing twice.
        run.refresh_from_db()
        assert run.counts == {"handled": 10, "duplicate": 20}
        assert run.position == run.last_seq == 30 and run.progress == 1.0
        assert sorted(Effect.objects.values_list("value", flat=True)) == list(range(20, 30))
        assert ProcessedMessage.objects.filter(consumer="testing").count() == 30
        [started] = audit_events("operator.replay_started.v1")
        assert (started["run_id"], started["consumer"], started["stream"], started["actor"]) == (
            run.pk, "testing", "TESTING", "olivia"
        )  # fmt: skip
        [completed] = audit_events("operator.replay_completed.v1")
        assert completed["counts"] == {"handled": 10, "duplicate": 20} and completed["position"] == 30
        page = client.get(reverse("admin:operations_replayrun_changelist")).content.decode()
        assert "#30 of #30 (100%)" in page and "handled 10" in page

        # When a second replay, of 100 slow messages in batches of 5, is cancelled mid-run.
        publish_all(declared, [SomethingHappened(value=100 + i, mode="slow") for i in range(100)])
        client.post(START, {"consumer": "testing", "stream": "TESTING", "from_seq": "31", "batch_size": "5"})
        second = ReplayRun.objects.exclude(pk=run.pk).get()
        wait_for(lambda: ReplayRun.objects.get(pk=second.pk).position > 30, timeout=30)
        second_page = client.get(reverse("admin:operations_replayrun_change", args=[second.pk]))
        assert b"cockpit-cancel-replay" in second_page.content
        response = client.post(reverse("admin:operations_replayrun_cancel", args=[second.pk]))
        assert response.status_code == 302
        wait_for(lambda: replay_worker_done(second), timeout=30, message="the worker stopped the replay")
    finally:
        stop_celery_worker(worker)

    # Then it stopped after the batch in hand, short of the end; the row says where.
    second.refresh_from_db()
    assert second.status == "cancelled" and second.cancelled_by == operator and second.last_seq == 130
    assert 30 < second.position < 130
    assert Effect.objects.filter(value__gte=100).count() == second.position - 30 == second.counts["handled"]
    [cancelled] = audit_events("operator.replay_cancelled.v1")
    assert (cancelled["run_id"], cancelled["actor"]) == (second.pk, "olivia")


def test_a_crashed_run_goes_on_after_its_last_written_batch(bus, operator):
    events = [SomethingHappened(value=i) for i in range(30)]
    publish_all(bus, events)
    # A run whose worker died after writing sequence 10 (the first 10 handled).
    crashed = ReplayRun.objects.create(
        consumer="testing", stream="TESTING", status="running", position=10, last_seq=30, counts={"handled": 10},
        batch_size=8, created_by=operator,
    )  # fmt: skip

    assert replay_run(run_id=crashed.pk) == "completed"

    crashed.refresh_from_db()
    assert crashed.status == "completed" and crashed.counts == {"handled": 30} and crashed.position == 30
    assert sorted(Effect.objects.values_list("value", flat=True)) == list(range(10, 30)), "from sequence 11 on"
    assert replay_run(run_id=crashed.pk) == "not active"


def test_a_missing_stream_fails_the_run_with_its_reason(bus, operator):
    run = ReplayRun.objects.create(consumer="testing", stream="TESTING", created_by=operator)
    bus.call(lambda js: js.delete_stream("TESTING"))

    assert replay_run(run_id=run.pk) == "failed"

    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error.startswith("NotFoundError") and len(run.error) <= ReplayRun.MAX_ERROR
    [failed] = audit_events("operator.replay_failed.v1")
    assert (failed["run_id"], failed["error"], failed["actor"]) == (run.pk, run.error, "")


@pytest.mark.django_db
def test_bad_requests_are_form_errors_and_start_nothing(client, operator):
    client.force_login(operator)
    valid = {"consumer": "testing", "stream": "TESTING", "batch_size": "500"}
    cases = [
        ({"consumer": "nobody"}, "consumer", "Select a valid choice"),
        ({"stream": "ORDERS"}, "stream", "testing reads nothing from stream 'ORDERS'; it reads TESTING"),
        ({"from_seq": "0"}, "from_seq", "a stream sequence starts at 1"),
        ({"from_seq": "3", "since": "2026-01-01T00:00:00"}, "__all__", "from a sequence or from a time, not both"),
        ({"since": "2999-01-01T00:00:00"}, "since", "the time is in the future"),
        ({"batch_size": "5000"}, "batch_size", "the batch size must be between 1 and 1000"),
    ]
    for change, field, message in cases:
        response = client.post(START, {**valid, **change})
        assert response.status_code == 200, change
        errors = form_errors(response)
        assert any(message in error for error in errors.get(field, [])), (change, errors)
        assert b"errornote" in response.content or b"errorlist" in response.content
    assert not ReplayRun.objects.exists()
    assert not OutboxEvent.objects.filter(subject__startswith="operator.replay_").exists()
    with pytest.raises(ReplayError, match="no consumer named 'nobody'") as refused:
        replay_start(consumer="nobody", stream="TESTING", actor=operator)
    assert refused.value.field == "consumer"


@pytest.mark.django_db
def test_one_active_replay_per_consumer(operator):
    first = replay_start(consumer="testing", stream="TESTING", actor=operator, from_seq=5)
    with pytest.raises(ReplayConflict, match="already queued or running"):
        replay_start(consumer="testing", stream="TESTING", actor=operator)
    replay_start(consumer="testing-other", stream="TESTING", actor=operator)
    assert ReplayRun.objects.filter(status="queued").count() == 2 and first.from_seq == 5


@pytest.mark.django_db
def test_auditors_see_replays_but_may_not_start_or_cancel_one(client, auditor, operator):
    run = replay_start(consumer="testing", stream="TESTING", actor=operator)
    client.force_login(auditor)

    listing = client.get(reverse("admin:operations_replayrun_changelist"))
    page = client.get(reverse("admin:operations_replayrun_change", args=[run.pk]))

    assert listing.status_code == 200 and b"cockpit-start-replay" not in listing.content
    assert page.status_code == 200 and b"cockpit-cancel-replay" not in page.content
    assert client.get(START).status_code == 403
    assert client.post(START, {"consumer": "testing", "stream": "TESTING", "batch_size": "5"}).status_code == 403
    assert client.post(reverse("admin:operations_replayrun_cancel", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == "queued" and ReplayRun.objects.count() == 1
