"""Poison messages, retries on the back-off schedule, dead letters, reprocess and discard."""

import time

import pytest
from django.contrib.auth import get_user_model
from prometheus_client import REGISTRY

from apps.eventbus import headers as h
from apps.eventbus.deadletters.services import DeadLetterStateError, dead_letter_discard, dead_letter_reprocess
from apps.eventbus.models import DeadLetter, DeadLetterEvent, ProcessedMessage
from tests.bus import wait_for
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect, Switch


def dlq_headers(bus, count):
    wait_for(lambda: bus.stream_messages("DLQ") == count, message="dead letters did not arrive")
    return [bus.get("DLQ", seq).headers for seq in range(1, count + 1)]


def test_poison_messages_reach_the_dlq_at_once_with_full_headers(bus):
    bad_json = bus.publish("testing.happened.v1", b"{not json", msg_id="bad-json")
    bad_schema = bus.publish("testing.happened.v1", {"message_id": "bad-schema", "value": "three"})
    unknown = bus.publish("testing.unversioned.thing", {"message_id": "unknown", "value": 1})
    with bus.consumer("testing"):
        headers = dlq_headers(bus, 3)
    by_sequence = {int(sent[h.DL_SEQUENCE]): sent for sent in headers}
    assert set(by_sequence) == {bad_json.seq, bad_schema.seq, unknown.seq}
    for sequence, sent in by_sequence.items():
        assert sent[h.DL_CONSUMER] == "testing" and sent[h.DL_STREAM] == "TESTING"
        assert sent[h.DL_ATTEMPTS] == "1", "poison is not retried"
        assert sent[h.DL_ERROR_TYPE] == "ContractError"
        assert sent["Nats-Msg-Id"] == f"dlq:testing:TESTING:{sequence}"
        assert sent[h.DL_FAILED_AT]
    assert "failed validation" in by_sequence[bad_schema.seq][h.DL_ERROR]
    assert "value: Input should be a valid integer" in by_sequence[bad_schema.seq][h.DL_ERROR]
    assert "no contract is registered for subject 'testing.unversioned.thing'" in by_sequence[unknown.seq][h.DL_ERROR]
    bodies = {bus.get("DLQ", seq).data for seq in (1, 2, 3)}
    assert b"{not json" in bodies, "the dead letter carries the original body untouched"
    assert not Effect.objects.exists()

    with bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.count() == 3)
    row = DeadLetter.objects.get(stream_sequence=bad_schema.seq)
    assert (row.consumer, row.stream, row.subject, row.attempts) == ("testing", "TESTING", "testing.happened.v1", 1)
    assert row.status == DeadLetter.Status.PENDING and row.message_id == "bad-schema"
    assert row.data == '{"message_id": "bad-schema", "value": "three"}'
    assert row.history.get().kind == DeadLetterEvent.Kind.FAILED


def test_a_permanent_handler_error_is_dead_lettered_at_once_and_rolled_back(bus):
    bus.publish_event(SomethingHappened(value=1, mode="permanent"))
    with bus.consumer("testing"):
        (headers,) = dlq_headers(bus, 1)
    assert headers[h.DL_ERROR_TYPE] == "PermanentError" and headers[h.DL_ATTEMPTS] == "1"
    assert "value refused by a business rule" in headers[h.DL_ERROR]
    assert "Traceback" in headers[h.DL_TRACEBACK]
    assert not Effect.objects.exists(), "the handler's effects were rolled back"
    assert not ProcessedMessage.objects.exists()


@pytest.mark.parametrize(("mode", "error_type"), [("fail", "RuntimeError"), ("retry", "RetryableError")])
def test_a_failing_handler_is_retried_on_the_backoff_schedule_then_dead_lettered(bus, mode, error_type):
    errors_before = (
        REGISTRY.get_sample_value("order_processing_errors_total", {"consumer": "testing", "error_type": error_type})
        or 0
    )
    published = time.monotonic()
    bus.publish_event(SomethingHappened(value=1, mode=mode))
    with bus.consumer("testing"):
        (headers,) = dlq_headers(bus, 1)
    elapsed = time.monotonic() - published
    assert headers[h.DL_ATTEMPTS] == "3", "max_deliver is 3"
    assert headers[h.DL_ERROR_TYPE] == error_type
    assert elapsed >= 0.2 + 0.5, "two naks with the schedule's delays (0.2 s, 0.5 s) came first"
    errors = REGISTRY.get_sample_value(
        "order_processing_errors_total", {"consumer": "testing", "error_type": error_type}
    )
    assert errors - errors_before == 3
    assert not Effect.objects.exists()


def record_failure_for_testing(bus):
    """An event the 'testing' consumer rejects (switch on) and 'testing-other' handles."""
    Switch.objects.update_or_create(name="reject", defaults={"on": True})
    event = SomethingHappened(value=5, mode="strict", correlation_id="order-42")
    bus.publish_event(event)
    return event


def test_reprocess_reaches_only_the_consumer_that_failed(bus):
    operator = get_user_model().objects.create_user("operator")
    event = record_failure_for_testing(bus)
    with bus.relay(), bus.consumer("testing"), bus.consumer("testing-other"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists())
        wait_for(lambda: Effect.objects.filter(consumer="testing-other").count() == 1)
        dead_letter = DeadLetter.objects.get()
        assert (dead_letter.consumer, dead_letter.correlation_id) == ("testing", "order-42")

        Switch.objects.filter(name="reject").update(on=False)  # the cause is fixed
        dead_letter_reprocess(dead_letter=dead_letter, actor=operator)
        assert DeadLetter.objects.get().status == DeadLetter.Status.REPROCESSING
        wait_for(lambda: DeadLetter.objects.get().status == DeadLetter.Status.RESOLVED)
        time.sleep(0.5)  # room for a wrong delivery to the other consumer to show up

    assert Effect.objects.filter(consumer="testing", message_id=event.message_id).count() == 1
    assert Effect.objects.filter(consumer="testing-other").count() == 1, "the other consumer got nothing new"
    assert ProcessedMessage.objects.filter(consumer="testing-other").count() == 1
    history = list(DeadLetter.objects.get().history.values_list("kind", "actor__username"))
    assert history == [("failed", None), ("reprocess_requested", "operator"), ("resolved", None)]


def test_a_reprocessed_message_that_fails_again_shows_it_on_its_row(bus):
    operator = get_user_model().objects.create_user("operator")
    record_failure_for_testing(bus)
    with bus.relay(), bus.consumer("testing"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists())
        dead_letter_reprocess(dead_letter=DeadLetter.objects.get(), actor=operator)  # switch still on
        wait_for(lambda: DeadLetter.objects.get().status == DeadLetter.Status.FAILED_AGAIN)
    row = DeadLetter.objects.get()
    assert DeadLetter.objects.count() == 1 and row.failures == 2
    assert [kind for (kind,) in row.history.values_list("kind")] == ["failed", "reprocess_requested", "failed"]


def test_discard_needs_a_reason_and_is_recorded(bus):
    operator = get_user_model().objects.create_user("operator")
    record_failure_for_testing(bus)
    with bus.consumer("testing"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists())
    row = DeadLetter.objects.get()
    with pytest.raises(ValueError, match="a reason is required"):
        dead_letter_discard(dead_letter=row, actor=operator, reason="  ")
    dead_letter_discard(dead_letter=row, actor=operator, reason="test order, not real")
    row.refresh_from_db()
    assert row.status == DeadLetter.Status.DISCARDED
    assert row.history.last().note == "test order, not real" and row.history.last().actor == operator
    with pytest.raises(DeadLetterStateError):
        dead_letter_reprocess(dead_letter=row, actor=operator)


def test_a_message_whose_key_the_ledger_cannot_hold_is_dead_lettered_and_the_consumer_goes_on(bus):
    """A 101-character id or a NUL in it once failed the ledger insert and stopped the consumer,
    on every redelivery; it is poison: dead-lettered at once, with the messages after it handled."""
    long_id = bus.publish("testing.happened.v1", {"note": "x"}, msg_id="m" * 101)
    nul_id = bus.publish("testing.happened.v1", b'{"message_id": "a\\u0000b"}')
    long_subject = bus.publish(
        "testing.happened.v1", {"note": "x"}, headers={"Eventbus-Original-Subject": "testing." + "s" * 200}
    )
    bus.publish_event(SomethingHappened(value=1))
    with bus.consumer("testing-raw"):
        headers = dlq_headers(bus, 3)
        wait_for(lambda: Effect.objects.filter(consumer="testing-raw").count() == 1)
    by_sequence = {int(sent[h.DL_SEQUENCE]): sent for sent in headers}
    assert set(by_sequence) == {long_id.seq, nul_id.seq, long_subject.seq}
    assert all(sent[h.DL_ERROR_TYPE] == "ContractError" and sent[h.DL_ATTEMPTS] == "1" for sent in headers)
    assert "message id is 101 characters long" in by_sequence[long_id.seq][h.DL_ERROR]
    assert "message id contains a NUL character" in by_sequence[nul_id.seq][h.DL_ERROR]
    assert "subject is 208 characters long" in by_sequence[long_subject.seq][h.DL_ERROR]
    assert ProcessedMessage.objects.filter(consumer="testing-raw").count() == 1

    with bus.consumer("dead-letters"):  # and the recorder bounds what it carries: three rows, no retry loop
        wait_for(lambda: DeadLetter.objects.count() == 3)
        wait_for(lambda: bus.drained("DLQ", "dead-letters"))
    rows = {row.stream_sequence: row for row in DeadLetter.objects.all()}
    assert rows[long_id.seq].message_id == "m" * 99 + "…"
    assert rows[nul_id.seq].message_id == "a\\x00b"
    assert rows[long_subject.seq].subject == ("testing." + "s" * 200)[:199] + "…"
