"""The happy path and idempotency: outbox -> relay -> stream -> consumer -> effects + ledger."""

import time

from django.db import transaction

from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.producing.outbox import outbox_write
from tests.bus import wait_for
from tests.support import other_session
from tests.testapp.events import SomethingHappened, SomethingHappenedV2
from tests.testapp.models import Effect


def test_events_flow_from_the_outbox_through_the_stream_to_the_handler(bus):
    with transaction.atomic():
        events = [outbox_write(SomethingHappened(value=i, correlation_id=f"agg-{i % 3}")) for i in range(30)]
    with bus.relay(), bus.consumer("testing"):
        wait_for(lambda: Effect.objects.count() == 30)
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    assert bus.stream_messages("TESTING") == 30
    assert ProcessedMessage.objects.filter(consumer="testing").count() == 30
    assert sorted(Effect.objects.values_list("value", flat=True)) == list(range(30))
    # per-aggregate order: each aggregate's events got increasing stream sequences
    for aggregate in ("agg-0", "agg-1", "agg-2"):
        sequences = list(
            OutboxEvent.objects.filter(aggregate_id=aggregate).order_by("id").values_list("stream_sequence", flat=True)
        )
        assert sequences == sorted(sequences)
    assert {row.message_id for row in events} == set(Effect.objects.values_list("message_id", flat=True))


def test_a_redelivered_message_does_not_run_its_handler_again(bus):
    event = SomethingHappened(value=1)
    bus.publish_event(event, msg_id="first-copy")
    bus.publish_event(event, msg_id="second-copy")  # the same event, past the broker's dedup
    # and once more through the consumer's redelivery subject, as an operator's redelivery
    bus.publish(
        "redeliver.TESTING.testing",
        event.to_json(),
        headers={"Eventbus-Original-Subject": event.subject, "Eventbus-Message-Id": event.message_id},
        msg_id="third-copy",
    )
    with bus.consumer("testing"):
        wait_for(lambda: bus.drained("TESTING", "testing"))
    assert Effect.objects.filter(message_id=event.message_id).count() == 1
    assert ProcessedMessage.objects.filter(message_id=event.message_id).count() == 1


def test_a_consumer_takes_v1_and_v2_side_by_side(bus):
    bus.publish_event(SomethingHappened(value=1))
    bus.publish_event(SomethingHappenedV2(amount=2, label="two"))
    with bus.consumer("testing"):
        wait_for(lambda: Effect.objects.count() == 2)
    assert sorted(Effect.objects.values_list("subject", "value")) == [
        ("testing.happened.v1", 1),
        ("testing.happened.v2", 2),
    ]


def test_a_batch_with_one_failing_message_commits_the_others(bus):
    for i in range(10):
        bus.publish_event(SomethingHappened(value=i, mode="permanent" if i == 4 else "ok"))
    with bus.consumer("testing", batch_size=10):
        wait_for(lambda: Effect.objects.count() == 9)
        wait_for(lambda: bus.stream_messages("DLQ") == 1)
    assert sorted(Effect.objects.values_list("value", flat=True)) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert ProcessedMessage.objects.count() == 9


def test_a_raw_consumer_sees_every_message(bus):
    bus.publish_event(SomethingHappened(value=1))
    bus.publish("testing.anything.v7", b"not even json")
    with bus.consumer("testing-raw"):
        wait_for(lambda: Effect.objects.filter(consumer="testing-raw").count() == 2)


def test_the_relay_wakes_on_notify_without_waiting_for_its_poll(bus):
    from apps.eventbus.producing.relay import Relay
    from tests.bus import BackgroundWorker

    with BackgroundWorker(Relay(batch_size=100, poll_interval=60)):
        time.sleep(0.5)  # the relay is idle, waiting on LISTEN
        started = time.monotonic()
        with transaction.atomic():
            outbox_write(SomethingHappened(value=1))
        wait_for(lambda: OutboxEvent.objects.filter(sent_at__isnull=False).exists(), timeout=10)
    assert time.monotonic() - started < 10, "woken by NOTIFY, not by the 60 s poll"


def test_two_relays_side_by_side_publish_each_event_once_in_aggregate_order(bus):
    with transaction.atomic():
        for i in range(300):
            outbox_write(SomethingHappened(value=i, correlation_id=f"order-{i % 10}"))
    with bus.relay(batch_size=40), bus.relay(batch_size=40):
        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), timeout=60)
    assert bus.stream_messages("TESTING") == 300
    for aggregate in {f"order-{i}" for i in range(10)}:
        sequences = list(
            OutboxEvent.objects.filter(aggregate_id=aggregate).order_by("id").values_list("stream_sequence", flat=True)
        )
        assert sequences == sorted(sequences) and len(set(sequences)) == 30


def test_a_relay_whose_whole_batch_waits_on_another_relay_publishes_nothing_then_catches_up(bus, caplog):
    """Another relay holds an aggregate's first event: this relay claims only the second one,
    must not publish it ahead of the first, and publishes both in order once the first is free."""
    with transaction.atomic():
        first = outbox_write(SomethingHappened(value=1, correlation_id="order-a"))
        second = outbox_write(SomethingHappened(value=2, correlation_id="order-a"))
    with other_session(autocommit=False) as other_relay:
        other_relay.execute(f"SELECT id FROM {OutboxEvent._meta.db_table} WHERE id = %s FOR UPDATE", [first.pk])
        with bus.relay(batch_size=10):
            time.sleep(1.0)  # rounds that find only the blocked event
            assert bus.stream_messages("TESTING") == 0, "the second event did not overtake the first"
            other_relay.rollback()  # the other relay gives its row up
            wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), timeout=10)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.stream_sequence == 1 and second.stream_sequence == 2
    failures = [r.getMessage() for r in caplog.records if r.name == "apps.eventbus.producing.relay" and r.levelno >= 30]
    assert not failures, "waiting on another relay is not a failure"


def test_a_handler_longer_than_ack_wait_is_not_redelivered_while_it_works(bus):
    bus.publish_event(SomethingHappened(value=1, mode="long"))
    with bus.consumer("testing"):
        wait_for(lambda: Effect.objects.count() == 1, timeout=30)
        wait_for(lambda: bus.drained("TESTING", "testing"), timeout=30)
        info = bus.consumer_info("TESTING", "testing")
    assert info.num_redelivered == 0, "in-progress kept the server from redelivering"
    assert ProcessedMessage.objects.count() == 1


def test_prefetched_messages_waiting_behind_a_long_batch_are_not_redelivered(bus):
    """Batches of one: the second and third are fetched while the first works past ack_wait; they
    wait in the process, kept in progress, and are neither redelivered nor applied twice."""
    for value in range(3):
        bus.publish_event(SomethingHappened(value=value, mode="long"))
    with bus.consumer("testing", batch_size=1):
        wait_for(lambda: Effect.objects.count() == 3, timeout=60)
        wait_for(lambda: bus.drained("TESTING", "testing"), timeout=30)
        info = bus.consumer_info("TESTING", "testing")
    assert info.num_redelivered == 0
    assert ProcessedMessage.objects.count() == 3


def test_a_message_carrying_a_status_header_is_handled_like_any_other(bus):
    """nats-py would take these for the server's own status messages (no messages, 503, an error
    without a description) and drop them unseen or fail the fetch; stored messages are messages."""
    statuses = [{"Status": "404"}, {"Status": "503"}, {"Status": "x"}, {"Status": "${x}", "Description": "d"}]
    events = [SomethingHappened(value=i) for i in range(len(statuses))]
    for event, headers in zip(events, statuses, strict=True):
        bus.publish(event.subject, event.to_json(), headers=headers, msg_id=event.message_id)
    bus.publish_event(SomethingHappened(value=99))
    with bus.consumer("testing") as worker:
        wait_for(lambda: Effect.objects.count() == len(events) + 1, timeout=20)
        wait_for(lambda: bus.drained("TESTING", "testing"), timeout=10)
        assert worker._thread.is_alive()
    assert bus.consumer_info("TESTING", "testing").num_redelivered == 0
