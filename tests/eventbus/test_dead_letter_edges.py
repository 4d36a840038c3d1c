"""Dead letters at the edges: a body near the server's max_payload, bodies and headers a
column cannot hold, junk published to ``dlq.*``, redeliveries no stream would take or the
server would refuse, control headers, and one row per dead letter however often it is
reported. Real nats-server and PostgreSQL (the ``bus`` fixture) where a message travels."""

from __future__ import annotations

import json

import pytest
from django.db import DataError
from django.urls import reverse

from apps.eventbus import bounds, wire
from apps.eventbus import headers as h
from apps.eventbus.deadletters import codec as dl
from apps.eventbus.deadletters import services
from apps.eventbus.deadletters.services import (
    DeadLetterStateError,
    DeadLetterUnpublishable,
    dead_letter_edit_and_reprocess,
    dead_letter_reprocess,
)
from apps.eventbus.models import DeadLetter, DeadLetterBody, DeadLetterEvent, OutboxEvent
from apps.operations.models import BulkReprocess
from apps.operations.roles import OPERATORS
from apps.operations.services import bulk_reprocess_run, bulk_reprocess_start
from tests.api.support import assert_error, client_for
from tests.bus import wait_for
from tests.factories import make_dead_letter
from tests.support import make_user
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

MAX_PAYLOAD = 1024 * 1024  # nats-server's default, which the test servers keep
LIMIT_BODY = 1_048_076  # the reproduction: stored by JetStream, too large to dead-letter with its headers


def invalid_body(size: int, message_id: str = "big-1") -> bytes:
    """A testing.happened.v1 body of exactly ``size`` bytes that fails its contract (value is text)."""
    head, tail = f'{{"message_id": "{message_id}", "value": "'.encode(), b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def record(consumer="testing", stream="TESTING", sequence=1, data: str | bytes = "{}", headers=None, **kw):
    """``make_dead_letter`` with this module's defaults: a poison message, no headers, no traceback."""
    fields = {"message_id": f"m-{sequence}", "error_type": "ContractError", "error": "invalid", "traceback": None, **kw}
    return make_dead_letter(sequence, consumer=consumer, stream=stream, data=data, headers=headers or {}, **fields)


# -- size: nothing re-published exceeds max_payload; a body that cannot travel is kept whole ---------


def test_a_near_limit_body_is_dead_lettered_recorded_whole_and_the_consumer_goes_on(bus):
    body = invalid_body(LIMIT_BODY)
    bus.publish("testing.happened.v1", body)
    bus.publish_event(SomethingHappened(value=7))
    with bus.consumer("testing") as runner, bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists(), message="the near-limit body was never recorded")
        wait_for(lambda: Effect.objects.filter(consumer="testing", value=7).exists(), message="the next message")
        assert runner.worker.nc.is_connected, "the server did not close the connection"
    stored = bus.get("DLQ", 1)
    assert stored.data in (b"", None), "the dead letter travelled without its body"
    assert stored.headers[h.DL_BODY_PARKED] == str(LIMIT_BODY)
    assert stored.headers[h.DL_CONSUMER] == "testing" and stored.headers[h.DL_SEQUENCE] == "1"
    row = DeadLetter.objects.get()
    assert (row.consumer, row.stream, row.stream_sequence, row.message_id) == ("testing", "TESTING", 1, "big-1")
    assert row.data.encode() == body and row.size == LIMIT_BODY and row.raw_data is None, "kept whole"
    assert not DeadLetterBody.objects.exists(), "the parked body moved into the row"
    assert "could not travel again with its dead-letter headers" in row.history.get().note


def test_headers_that_push_a_dead_letter_over_the_limit_are_shrunk_and_the_body_travels(bus):
    headers = {"X-Big": "v" * 5000, "X-Small": "s"}
    body = invalid_body(MAX_PAYLOAD - wire.wire_size(headers, b"") - 200)  # 200 bytes to spare as it is stored
    bus.publish("testing.happened.v1", body, headers=headers)
    with bus.consumer("testing"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists())
    stored = bus.get("DLQ", 1)
    assert stored.data == body and h.DL_BODY_PARKED not in stored.headers
    assert wire.wire_size({**stored.headers}, stored.data) <= MAX_PAYLOAD
    original = json.loads(stored.headers[h.DL_ORIGINAL_HEADERS])
    assert "kept" in original[h.TRUNCATED] and len(original["X-Big"]) <= dl.SHRUNK_HEADER_VALUE
    row = DeadLetter.objects.get()
    assert row.data.encode() == body and row.headers[h.TRUNCATED].startswith("kept")


def test_original_headers_that_outgrow_jetstreams_header_limit_once_escaped_are_shrunk(bus):
    """A 40 KB header of backslashes is stored; as JSON in the dead letter's headers it is 80 KB,
    beyond the 64 KB JetStream takes for a header block whatever max_payload says."""
    bus.publish("testing.happened.v1", {"value": "bad"}, headers={"X-Escapes": "\\" * 40_000, "X-Emoji": "😀" * 4000})
    with bus.consumer("testing"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists(), message="the dead letter was never stored")
    stored = bus.get("DLQ", 1)
    assert wire.header_size(stored.headers) <= wire.MAX_HEADER_BLOCK and stored.data == b'{"value": "bad"}'
    row = DeadLetter.objects.get()
    assert row.headers[h.TRUNCATED].startswith("kept") and row.data == '{"value": "bad"}'


def test_the_near_limit_dead_letter_can_be_reprocessed_and_fails_again_whole(bus):
    operator = make_user("olga", OPERATORS)
    body = invalid_body(LIMIT_BODY)
    bus.publish("testing.happened.v1", body)
    with bus.relay(), bus.consumer("testing"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists())
        dead_letter_reprocess(dead_letter=DeadLetter.objects.get(), actor=operator)
        wait_for(lambda: DeadLetter.objects.get().status == DeadLetter.Status.FAILED_AGAIN)
    row = DeadLetter.objects.get()
    assert DeadLetter.objects.count() == 1 and row.failures == 2 and row.data.encode() == body
    assert not DeadLetterBody.objects.exists()


def test_fit_dead_letter_shrinks_then_parks_and_never_exceeds_the_limit():
    headers = {
        h.DL_CONSUMER: "c",
        h.DL_TRACEBACK: json.dumps("Traceback\n" + "t" * 15000),
        h.DL_ORIGINAL_HEADERS: json.dumps({f"H-{i}": "v" * 300 for i in range(50)}),
    }
    small = dl.fit_dead_letter(headers, b"x" * 100, MAX_PAYLOAD)
    assert small.headers == headers and small.body == b"x" * 100 and not small.parked

    shrunk = dl.fit_dead_letter(headers, b"x" * (MAX_PAYLOAD - 10_000), MAX_PAYLOAD)
    assert not shrunk.parked and len(shrunk.headers[h.DL_TRACEBACK]) < 3000
    assert "left out to fit" in json.loads(shrunk.headers[h.DL_TRACEBACK])
    assert h.TRUNCATED in json.loads(shrunk.headers[h.DL_ORIGINAL_HEADERS])

    parked = dl.fit_dead_letter(headers, b"x" * (MAX_PAYLOAD - 100), MAX_PAYLOAD)
    assert parked.parked and parked.body == b"" and parked.headers[h.DL_BODY_PARKED] == str(MAX_PAYLOAD - 100)
    assert parked.headers[h.DL_TRACEBACK] == headers[h.DL_TRACEBACK], "whole again once the body stays behind"

    for fitted in (small, shrunk, parked):
        assert wire.wire_size({**fitted.headers, "Nats-Expected-Stream": "DLQ"}, fitted.body) <= MAX_PAYLOAD
    escaped = {**headers, h.DL_ORIGINAL_HEADERS: json.dumps({"X": "\\" * 40_000})}
    assert wire.header_size(escaped) > wire.MAX_HEADER_BLOCK
    fitted = dl.fit_dead_letter(escaped, b"x" * 100, MAX_PAYLOAD)
    assert not fitted.parked and wire.header_size(fitted.headers) <= wire.MAX_HEADER_BLOCK
    bare = dl.fit_dead_letter(headers, b"x" * 5000, 4096)
    assert bare.parked and h.DL_TRACEBACK not in bare.headers and h.DL_ORIGINAL_HEADERS not in bare.headers
    assert wire.wire_size({**bare.headers, "Nats-Expected-Stream": "DLQ"}, bare.body) <= 4096


# -- the recorder records every failure -----------------------------------------------------------


def test_bodies_and_ids_no_column_can_hold_as_they_are_are_recorded(bus):
    nul = bus.publish("testing.happened.v1", b"\x00")
    not_utf8 = bus.publish("testing.happened.v1", b'{"value": "\xff\xfe"}')
    long_correlation = bus.publish(
        "testing.happened.v1", {"message_id": "long-c", "value": "bad", "correlation_id": "c" * 101}
    )
    long_id = bus.publish("testing.happened.v1", {"note": "x"}, msg_id="m" * 101)
    with bus.consumer("testing"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.count() == 4, message="every dead letter recorded")
        wait_for(lambda: bus.drained("DLQ", "dead-letters"), message="nothing left to retry")
    rows = {row.stream_sequence: row for row in DeadLetter.objects.all()}

    assert rows[nul.seq].data == "\\x00" and bytes(rows[nul.seq].raw_data) == b"\x00" and rows[nul.seq].size == 1
    assert bytes(rows[not_utf8.seq].raw_data) == b'{"value": "\xff\xfe"}' and "\\xff\\xfe" in rows[not_utf8.seq].data
    assert rows[long_correlation.seq].correlation_id == "c" * 99 + "…"
    assert rows[long_correlation.seq].raw_data is None, "a faithful body needs no copy"
    assert rows[long_id.seq].message_id == "m" * 99 + "…"
    assert all(row.error_type == "ContractError" and row.consumer == "testing" for row in rows.values())


def dlq_junk(bus):
    """What an outsider can publish to dlq.*: (sequence, what it must become)."""
    good = {h.DL_CONSUMER: "testing", h.DL_STREAM: "TESTING"}
    cases = [
        (bus.publish("dlq.anything", {"note": "x"}), "poison"),
        (bus.publish("dlq.testing", b"{}", headers={**good, h.DL_SEQUENCE: "abc"}), "poison"),
        (bus.publish("dlq.testing", b"{}", headers={**good, h.DL_SEQUENCE: "9" * 25}), "poison"),
        (bus.publish("dlq.testing", b"{}", headers={h.DL_CONSUMER: "t" * 101, h.DL_STREAM: "S", h.DL_SEQUENCE: "3"}),
         "poison"),
        (bus.publish("dlq.testing", b"{}", headers={h.DL_CONSUMER: "a\x00b", h.DL_STREAM: "S", h.DL_SEQUENCE: "4"}),
         "poison"),
        (bus.publish("dlq.testing", {"note": "x"}, msg_id="n" * 101), "poison"),
        (
            bus.publish(
                "dlq.testing",
                b"\x00\xff",
                headers={
                    **good,
                    h.DL_SEQUENCE: "1001",
                    h.DL_ATTEMPTS: "-5",
                    h.DL_SUBJECT: "s" * 300,
                    h.DL_ERROR_TYPE: "E" * 300,
                    h.DL_ERROR: "bad\x00error",
                    h.DL_FAILED_AT: "yesterday",
                    h.DL_LEDGER_KEY: "o" * 101,
                    h.DL_ORIGINAL_HEADERS: json.dumps({"X-Nul": "a\x00b", "a\x00": "b", "Deep": {"x": [1]}}),
                    h.DL_TRACEBACK: "not json \x00",
                    h.DL_REPROCESSED_DEAD_LETTER_ID: "²",
                },
            ),
            "recorded",
        ),
        (
            bus.publish(
                "dlq.testing",
                b"{}",
                headers={**good, h.DL_SEQUENCE: "1002", h.DL_ORIGINAL_HEADERS: "[1, 2]", h.DL_BODY_PARKED: "5"},
            ),
            "recorded",
        ),
    ]  # fmt: skip
    return [(ack.seq, outcome) for ack, outcome in cases]


def test_junk_on_dlq_ends_as_rows_and_never_stops_the_dead_letters_consumer(bus):
    cases = dlq_junk(bus)
    poison = [seq for seq, outcome in cases if outcome == "poison"]
    with bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.count() == len(cases), timeout=60, message="every junk message a row")
        wait_for(lambda: bus.drained("DLQ", "dead-letters"), message="nothing left to retry")
        assert DeadLetter.objects.count() == len(cases), "and nothing more"
    poison_rows = DeadLetter.objects.filter(consumer="dead-letters", stream="DLQ")
    assert sorted(poison_rows.values_list("stream_sequence", flat=True)) == sorted(poison)
    assert {row.error_type for row in poison_rows} <= {"PermanentError", "ContractError"}

    odd = DeadLetter.objects.get(consumer="testing", stream_sequence=1001)
    assert odd.attempts == 0 and odd.subject == "s" * 199 + "…" and odd.error_type == "E" * 199 + "…"
    assert odd.message_id == "o" * 99 + "…" and odd.error == "bad\\x00error"
    assert odd.headers == {"X-Nul": "a\\x00b", "a\\x00": "b", "Deep": '{"x": [1]}'}
    assert odd.traceback == "not json \\x00" and bytes(odd.raw_data) == b"\x00\xff"
    announced = DeadLetter.objects.get(consumer="testing", stream_sequence=1002)
    assert announced.headers == {h.TRUNCATED: "the original headers were not a JSON object"}
    assert "announced a body kept in the database, but none was found" in announced.history.get().note


def test_a_dead_letter_whose_insert_still_fails_is_recorded_as_a_minimal_row(db, monkeypatch):
    def refuse(*args, **kwargs):
        raise DataError("value too long for type character varying(100)")

    monkeypatch.setattr(services, "_record", refuse)
    row = record(sequence=5, data=b"\x00body", error_type="ContractError")
    assert (row.consumer, row.stream, row.stream_sequence) == ("testing", "TESTING", 5)
    assert row.error_type == "UnrecordableDeadLetter" and "value too long" in row.error and "ContractError" in row.error
    assert bytes(row.raw_data) == b"\x00body" and row.history.get().kind == DeadLetterEvent.Kind.FAILED


# -- idempotency by the event -------------------------------------------------------------------


def test_two_consumers_dead_lettering_one_event_are_two_rows_and_one_reported_twice_is_one(bus):
    bad = bus.publish("testing.happened.v1", {"message_id": "twice", "value": "bad"})
    with bus.consumer("testing"), bus.consumer("testing-other"), bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.count() == 2)
        first = bus.get("DLQ", 1)
        again = {**first.headers, "Nats-Msg-Id": "past-the-duplicate-window", h.DL_ERROR: "reported again"}
        bus.publish(f"dlq.{first.headers[h.DL_CONSUMER]}", first.data, headers=again)
        wait_for(lambda: bus.stream_messages("DLQ") == 3 and bus.drained("DLQ", "dead-letters"))
    rows = DeadLetter.objects.filter(stream="TESTING", stream_sequence=bad.seq)
    assert sorted(rows.values_list("consumer", flat=True)) == ["testing", "testing-other"]
    assert rows.get(consumer=first.headers[h.DL_CONSUMER]).error != "reported again", "the first report stays"


def test_a_body_parked_for_a_dead_letter_already_recorded_is_not_kept(db):
    record(sequence=9)
    assert not services.dead_letter_park_body(consumer="testing", stream="TESTING", stream_sequence=9, body=b"x")
    assert services.dead_letter_park_body(consumer="testing", stream="TESTING", stream_sequence=10, body=b"y")
    assert services.dead_letter_park_body(consumer="testing", stream="TESTING", stream_sequence=10, body=b"y")
    assert DeadLetterBody.objects.count() == 1
    row = record(sequence=10, data=b"", body_parked=True)
    assert row.data == "y" and not DeadLetterBody.objects.exists()


# -- operator actions that would produce an unpublishable event are refused ---------------------


def test_reprocessing_a_dead_letter_no_stream_would_take_is_refused_in_the_api_and_the_admin(bus, client):
    operator = make_user("olga", OPERATORS)
    bus.publish("dlq.anything", {"note": "x"})
    with bus.consumer("dead-letters"):
        wait_for(lambda: DeadLetter.objects.exists())
    dead_letter = DeadLetter.objects.get()
    assert (dead_letter.consumer, dead_letter.stream) == ("dead-letters", "DLQ")
    before = OutboxEvent.objects.count()

    response = client_for(operator).post(f"/api/dead-letters/{dead_letter.pk}/reprocess/")
    error = assert_error(response, 409, "dead_letter_state_conflict")
    assert "redeliver.DLQ.dead-letters" in error["message"] and "captured by no stream" in error["message"]

    client.force_login(operator)
    page = client.post(reverse("admin:eventbus_deadletter_reprocess", args=[dead_letter.pk]), follow=True)
    assert any("Refused, nothing was sent" in str(m) for m in page.context["messages"])
    change = client.get(reverse("admin:eventbus_deadletter_change", args=[dead_letter.pk])).content.decode()
    assert "captured by no stream" in change and 'id="cockpit-reprocess"' not in change
    listing = client.get(reverse("admin:eventbus_deadletter_changelist")).content.decode()
    assert reverse("admin:eventbus_deadletter_reprocess", args=[dead_letter.pk]) not in listing

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING and OutboxEvent.objects.count() == before
    assert not dead_letter.history.filter(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).exists()


@pytest.fixture
def small_payload(settings):
    settings.EVENTBUS = {**settings.EVENTBUS, "MAX_PAYLOAD": 2048}


@pytest.mark.django_db
def test_reprocessing_or_editing_beyond_max_payload_is_refused_and_bulk_runs_skip_it(small_payload, client):
    operator = make_user("olga", OPERATORS)
    event = SomethingHappened(value=1)
    fat = record(sequence=1, data=json.dumps({**event.model_dump(mode="json"), "pad": "p" * 3000}))
    slim = record(sequence=2, data=event.to_json().decode())
    before = OutboxEvent.objects.count()

    with pytest.raises(DeadLetterUnpublishable, match=r"more than the 2048 bytes the server accepts"):
        dead_letter_reprocess(dead_letter=fat, actor=operator)
    assert_error(client_for(operator).post(f"/api/dead-letters/{fat.pk}/reprocess/"), 409, "dead_letter_state_conflict")
    with pytest.raises(DeadLetterUnpublishable, match="edited payload"):
        dead_letter_edit_and_reprocess(dead_letter=slim, actor=operator, data=fat.data)
    slim.refresh_from_db()
    assert slim.edited_data == "" and OutboxEvent.objects.count() == before, "nothing saved, nothing written"

    client.force_login(operator)
    page = client.post(reverse("admin:eventbus_deadletter_edit", args=[slim.pk]), {"data": fat.data})
    assert page.status_code == 200 and "Refused, nothing was saved or sent" in page.content.decode()
    change = client.get(reverse("admin:eventbus_deadletter_change", args=[fat.pk])).content.decode()
    assert "refused" in change and f"{fat.size:,} bytes" in change, "the size and the refusal are shown"

    [run] = bulk_reprocess_start(dead_letters=DeadLetter.objects.all(), actor=operator, rate=100)
    assert bulk_reprocess_run(run_id=run.pk, sleep=lambda _: None) == "completed"
    run.refresh_from_db()
    assert (run.reprocessed, run.skipped) == (1, 1)
    fat.refresh_from_db()
    assert fat.status == DeadLetter.Status.PENDING and BulkReprocess.objects.get().total == 2


@pytest.mark.django_db
def test_a_body_the_outbox_cannot_carry_is_refused_until_it_is_edited():
    operator = make_user("olga", OPERATORS)
    row = record(sequence=1, data=b'{"value": 1, "x": "\xff"}')
    with pytest.raises(DeadLetterUnpublishable, match="not UTF-8 text"):
        dead_letter_reprocess(dead_letter=row, actor=operator)
    dead_letter_edit_and_reprocess(dead_letter=row, actor=operator, data=SomethingHappened(value=1).to_json().decode())
    assert DeadLetter.objects.get().status == DeadLetter.Status.REPROCESSING
    with pytest.raises(DeadLetterStateError):
        dead_letter_reprocess(dead_letter=record(sequence=2, consumer="nobody"), actor=operator)


@pytest.mark.django_db
def test_the_admin_shows_a_large_body_by_its_size_with_a_preview_and_a_download(client):
    operator = make_user("olga", OPERATORS)
    body = invalid_body(200_000)
    row = record(sequence=1, data=body)
    odd = record(sequence=2, data=b"\x00\xff")
    client.force_login(operator)
    page = client.get(reverse("admin:eventbus_deadletter_change", args=[row.pk])).content.decode()
    assert "200,000 bytes" in page and "The first 65,536 of 200,000 characters" in page
    assert "x" * 70_000 not in page
    download = client.get(reverse("admin:eventbus_deadletter_body", args=[odd.pk]))
    assert download.status_code == 200 and download.content == b"\x00\xff"
    listing = client.get(reverse("admin:eventbus_deadletter_changelist"))
    assert listing.status_code == 200 and {r.pk for r in listing.context["cl"].result_list} == {row.pk, odd.pk}


# -- re-publishing never copies control headers -------------------------------------------------


def test_reprocess_copies_no_control_header_and_the_redelivery_is_handled(bus):
    operator = make_user("olga", OPERATORS)
    event = SomethingHappened(value=3)
    control = {
        "Nats-Expected-Last-Sequence": "1",
        "Nats-Expected-Stream": "ELSEWHERE",
        "Nats-Expected-Last-Msg-Id": "nope",
        "Nats-Rollup": "all",
        "Nats-TTL": "1s",
        "Nats-Schedule": "@every 1s",
        "Nats-Schedule-Target": "testing.happened.v1",
        "nats-msg-id": event.message_id,
        "Eventbus-Dead-Letter-Id": "999",
        "Eventbus-Original-Subject": "elsewhere.v1",
    }
    unsafe = {"X-Line": "a\r\nb", "Bad Name": "x", "X-Huge": "h" * 5000}
    headers = {**control, **unsafe, "X-Tenant": "t1", "X-Nul": "a\x00b"}
    row = record(sequence=77, data=event.to_json().decode(), headers=headers)
    assert row.headers["X-Nul"] == "a\\x00b", "the row holds NUL escaped (jsonb cannot hold it)"
    dead_letter_reprocess(dead_letter=row, actor=operator)
    outbox = OutboxEvent.objects.get(subject="redeliver.TESTING.testing")
    assert outbox.headers == {
        "X-Tenant": "t1",
        "X-Nul": "a\\x00b",
        "Eventbus-Original-Subject": "testing.happened.v1",
        "Eventbus-Message-Id": "m-77",
        "Eventbus-Dead-Letter-Id": str(row.pk),
    }
    note = row.history.get(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).note
    assert "Nats-Rollup" in note and "X-Line" in note and "nats-msg-id" not in note
    with bus.relay(), bus.consumer("testing"):
        wait_for(lambda: DeadLetter.objects.get().status == DeadLetter.Status.RESOLVED, message="not handled")
    assert Effect.objects.filter(consumer="testing", value=3).count() == 1


def test_copyable_headers_bounds_count_and_size():
    many = {f"X-{i}": "v" for i in range(100)}
    kept, dropped = bounds.copyable_headers(many)
    assert len(kept) == bounds.MAX_COPIED_HEADERS and len(dropped) == 100 - bounds.MAX_COPIED_HEADERS
    big = {f"X-{i}": "v" * 1000 for i in range(20)}
    kept, _ = bounds.copyable_headers(big)
    assert sum(len(k) + len(v) + 4 for k, v in kept.items()) <= bounds.MAX_COPIED_TOTAL
    assert bounds.copyable_headers(["not", "a", "dict"]) == ({}, [])
    kept, dropped = bounds.copyable_headers({"X-Nul": "a\x00b", "X-Tab": "a\tb", "X-Space": " a", "X-Ok": "ok"})
    assert kept == {"X-Ok": "ok"} and dropped == ["X-Nul", "X-Tab", "X-Space"]


@pytest.mark.django_db
def test_an_edit_event_carries_a_large_payload_cut_with_a_marker_and_the_row_keeps_it_whole(monkeypatch):
    monkeypatch.setattr(services, "MAX_EVENT_PAYLOAD", 100)
    operator = make_user("olga", OPERATORS)
    event = SomethingHappened(value=1)
    original = json.dumps({**event.model_dump(mode="json"), "value": "bad", "pad": "p" * 500})
    row = record(sequence=1, data=original)
    edited = json.dumps({**event.model_dump(mode="json"), "pad": "q" * 500})
    dead_letter_edit_and_reprocess(dead_letter=row, actor=operator, data=edited)
    payload = json.loads(OutboxEvent.objects.get(subject="operator.dead_letter_edited.v1").body)
    assert payload["original_data"].endswith(f"the whole payload is on dead letter {row.pk}]")
    assert payload["edited_data"].startswith(edited[:50]) and "cut:" in payload["edited_data"]
    row.refresh_from_db()
    assert row.data == original and row.edited_data == edited


@pytest.mark.django_db
def test_the_admin_shows_json_nested_too_deep_to_indent_as_text(client):
    operator = make_user("olga", OPERATORS)
    deep = "[" * 5000 + "]" * 5000
    row = record(sequence=1, data=deep, headers={"X": "y"})
    client.force_login(operator)
    assert client.get(reverse("admin:eventbus_deadletter_change", args=[row.pk])).status_code == 200
    assert client.get(reverse("admin:eventbus_deadletter_edit", args=[row.pk])).status_code == 200
