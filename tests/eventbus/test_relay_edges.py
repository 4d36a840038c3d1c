"""The relay against its own edge inputs (issue 11): an outage with a backlog, rows JetStream can
never accept, a refusal of the stream itself. Real nats-server and PostgreSQL processes."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.db import connection, transaction

from apps.eventbus.models import OutboxDeadLetter, OutboxEvent
from apps.eventbus.producing.outbox import outbox_write, outbox_write_raw, wire_headers
from apps.eventbus.wire import wire_size
from tests.bus import stop_process, wait_for
from tests.testapp.events import SomethingHappened

pytestmark = pytest.mark.slow


def unsent() -> int:
    return OutboxEvent.objects.filter(sent_at__isnull=True).count()


def relay_sessions_idle_in_transaction() -> int:
    """Sessions other than this test's that sit in an open transaction doing nothing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def raw_row(subject: str, *, aggregate: str, body: str = '{"note": "x"}', **headers: str) -> OutboxEvent:
    message_id = f"{aggregate}-{subject}-{time.monotonic_ns()}"
    return outbox_write_raw(
        message_id=message_id,
        subject=subject,
        aggregate_id=aggregate,
        body=body,
        headers={**wire_headers("testing.happened.v1"), **headers},
    )


def test_the_relay_recovers_from_a_nats_outage_with_a_backlog_and_stops_on_sigterm(bus, nats_settings):
    """Issue 11, reproduction 1: 1,000 rows written while NATS is down. The relay claims nothing
    while it is disconnected (no session idle in transaction), drains once NATS is back, and
    SIGTERM stops it promptly, during the outage too."""
    process = bus.relay_process()
    try:
        with transaction.atomic():
            outbox_write(SomethingHappened(value=-1))
        wait_for(lambda: unsent() == 0, timeout=30, message="the relay publishes before the outage")
        nats_settings.stop()
        with transaction.atomic():
            for i in range(1000):
                raw_row("testing.happened.v1", aggregate=f"order-{i % 50}", body=json.dumps({"pad": "x" * 550}))
        time.sleep(4)  # several rounds' worth of back-off while NATS is down
        assert process.poll() is None, "the relay survives the outage"
        assert relay_sessions_idle_in_transaction() == 0, "no transaction waits on NATS"
        assert unsent() == 1000
        nats_settings.start()
        wait_for(lambda: unsent() == 0, timeout=60, message="the backlog drains after the outage")
        assert bus.stream_messages("TESTING") == 1001
        nats_settings.stop()
        time.sleep(1)
        assert stop_process(process, timeout=20) == 0, "SIGTERM stops the relay during an outage"
    finally:
        if not nats_settings.is_running():
            nats_settings.start()
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("subject", "body", "headers", "reason"),
    [
        ("redeliver.DLQ.dead-letters", '{"note": "x"}', {}, "no stream captures"),
        ("nowhere.at.all", '{"note": "x"}', {}, "no stream captures"),
        ("testing.happened.v1", json.dumps({"blob": "x" * 1_048_540}), {}, "max_payload"),
        ("testing.happened.v1", '{"note": "x"}', {"X-Big": "h" * 70_000}, "JetStream's limit"),
        ("testing.happened.v1", '{"note": "x"}', {"X-Bad": "line\r\nbreak"}, "control character"),
        ("testing.happened.v1", '{"note": "x"}', {"Bad Name": "x"}, "not a valid token"),
        # The stream itself refuses it (a 400 from JetStream), after it was sent.
        ("testing.happened.v1", '{"note": "x"}', {"Nats-Expected-Last-Sequence": "999999"}, "JetStream refused it"),
    ],
    ids=[
        "redelivery-subject-of-a-stream-without-one",
        "no-stream",
        "over-max-payload",
        "headers-over-64k",
        "header-crlf",
        "header-name",
        "400",
    ],
)
def test_a_row_jetstream_can_never_accept_is_set_aside_and_nothing_waits_behind_it(
    bus, caplog, subject, body, headers, reason
):
    """Issue 11, reproduction 3 and the whole kind: the row goes to the outbox's dead letters
    with the reason, its aggregate's later events are released (the documented rule), other
    aggregates are not held up, and the relay goes on without backing off."""
    with transaction.atomic():
        refused = raw_row(subject, aggregate="order-a", body=body, **headers)
        later = outbox_write(SomethingHappened(value=1, correlation_id="order-a"))
        other = outbox_write(SomethingHappened(value=2, correlation_id="order-b"))
    caplog.set_level(logging.INFO, logger="apps.eventbus.producing.relay")
    with bus.relay(batch_size=10):
        wait_for(lambda: unsent() == 0, timeout=20)
        with transaction.atomic():
            after = outbox_write(SomethingHappened(value=3, correlation_id="order-c"))
        wait_for(lambda: OutboxEvent.objects.get(pk=after.pk).sent_at is not None, timeout=10)
    assert not OutboxEvent.objects.filter(pk=refused.pk).exists(), "moved out of the outbox"
    (dead,) = OutboxDeadLetter.objects.all()
    assert (dead.outbox_id, dead.message_id, dead.subject, dead.body) == (
        refused.pk, refused.message_id, subject, body,
    )  # fmt: skip
    assert dead.status == OutboxDeadLetter.Status.REFUSED and reason in dead.reason
    assert OutboxEvent.objects.get(pk=later.pk).sent_at is not None, "the aggregate's later event is released"
    assert OutboxEvent.objects.get(pk=other.pk).sent_at is not None
    assert bus.stream_messages("TESTING") == 3
    logged = [r for r in caplog.records if r.name == "apps.eventbus.producing.relay"]
    assert any(reason in r.getMessage() and r.levelno == logging.ERROR for r in logged), "the refusal is logged"
    assert not any("not acknowledged" in r.getMessage() for r in logged), "no retry round, no back-off"


def test_a_row_just_under_the_limit_with_its_headers_is_published(bus):
    """The size check counts what the server counts: headers and body, no more."""
    headers = {**wire_headers("testing.happened.v1"), "Nats-Msg-Id": "m" * 40}
    room = 1_048_576 - wire_size(headers, b"") - len(json.dumps({"blob": ""}))
    with transaction.atomic():
        outbox_write_raw(
            message_id="m" * 40,
            subject="testing.happened.v1",
            aggregate_id="order-a",
            body=json.dumps({"blob": "x" * room}),
            headers=wire_headers("testing.happened.v1"),
        )
    with bus.relay(batch_size=10):
        wait_for(lambda: unsent() == 0, timeout=20)
    assert not OutboxDeadLetter.objects.exists()
    assert bus.stream_messages("TESTING") == 1


def test_a_transient_failure_still_retries_and_keeps_the_aggregate_in_order(bus, nats_settings):
    """JetStream without the stream for a while (deleted and declared again): the rows are not
    set aside, they wait and go in order once it is back."""
    with bus.relay(batch_size=10):
        with transaction.atomic():
            outbox_write(SomethingHappened(value=-1, correlation_id="order-z"))
        wait_for(lambda: unsent() == 0, timeout=10)  # the relay has started (and declared its streams)
        bus.call(lambda js: js.delete_stream("TESTING"))
        with transaction.atomic():
            for i in range(5):
                outbox_write(SomethingHappened(value=i, correlation_id="order-a"))
        time.sleep(1.5)
        assert unsent() == 5 and not OutboxDeadLetter.objects.exists()
        bus.setup_streams()
        wait_for(lambda: unsent() == 0, timeout=30)
    rows = OutboxEvent.objects.filter(aggregate_id="order-a").order_by("id")
    sequences = list(rows.values_list("stream_sequence", flat=True))
    assert sequences == sorted(sequences) and len(set(sequences)) == 5


def test_a_relay_that_keeps_failing_in_a_way_it_was_not_written_for_exits(bus, monkeypatch):
    """Not an outage (those are waited out) but a bug: after a few rounds in a row the relay
    exits with the error, for its supervisor to restart it, instead of staying up and deaf."""
    from apps.eventbus.producing.relay import Relay

    def broken(self):
        raise RuntimeError("a bug in the round")

    monkeypatch.setattr(Relay, "_claim", broken)
    monkeypatch.setattr("apps.eventbus.producing.relay.BACKOFF_MAX", 0.05)
    monkeypatch.setattr("apps.eventbus.producing.relay.BACKOFF_INITIAL", 0.01)
    worker = bus.relay()
    with pytest.raises(RuntimeError, match="a bug in the round"), worker:
        wait_for(lambda: not worker._thread.is_alive(), timeout=20, message="the relay stayed up")


def test_a_streams_redelivery_subject_is_captured_and_a_stream_without_one_captures_none():
    """The one rule the relay and the reprocess check share (``Registry.captures``)."""
    from apps.eventbus.registry import registry

    assert registry.captures("redeliver.TESTING.testing") and registry.stream_for("redeliver.TESTING.testing").name == (
        "TESTING"
    )
    assert registry.captures("testing.happened.v1")
    assert not registry.captures("redeliver.DLQ.dead-letters"), "the DLQ stream takes no redeliveries"
    assert not registry.captures("nowhere.at.all") and not registry.captures("testing")
