"""The dead-letter and redelivery headers: written and read by one codec."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from apps.eventbus import headers as h
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.deadletters.codec import (
    MAX_ERROR,
    MAX_TRACEBACK,
    NOT_A_REDELIVERY,
    DeadLetterHeaders,
    Redelivery,
    dlq_msg_id,
)
from apps.eventbus.errors import PermanentError

FAILED_AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


def full(**changes) -> DeadLetterHeaders:
    values = {
        "consumer": "payments",
        "stream": "ORDERS",
        "stream_sequence": 1042,
        "subject": "orders.created.v1",
        "attempts": 5,
        "error_type": "PermanentError",
        "error": "card refused",
        "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\nPermanentError: card refused',
        "failed_at": FAILED_AT,
        "ledger_key": "01JF3ZK0000000000000000000",
        "original_headers": {"Nats-Msg-Id": "01JF3ZK0000000000000000000", "traceparent": "00-ab-cd-01"},
        "content_type": "application/json",
        "reprocessed_dead_letter_id": 7,
        "parked_body_size": 2_000_000,
    }
    return DeadLetterHeaders(**{**values, **changes})


@pytest.mark.parametrize(
    "written",
    [
        full(),
        full(reprocessed_dead_letter_id=None, parked_body_size=None, traceback=""),
        full(error="", error_type="Unknown", original_headers={}, parked_body_size=0),
        full(subject="testing.ünïcode.v1", error='tab\\there, quotes "x", 日本'),
    ],
    ids=["every-header", "the-optional-ones-left-out", "empty-values", "non-ascii"],
)
def test_a_dead_letter_round_trips(written):
    encoded = written.encode()
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in encoded.items())
    assert all("\n" not in value and "\r" not in value for value in encoded.values()), "one line per header"
    assert DeadLetterHeaders.decode(encoded) == written


def test_the_dead_letter_carries_its_broker_id_and_the_wire_names():
    encoded = full().encode()
    assert encoded[h.NATS_MSG_ID] == dlq_msg_id("payments", "ORDERS", 1042) == "dlq:payments:ORDERS:1042"
    assert encoded[h.DL_SEQUENCE] == "1042" and encoded[h.DL_LEDGER_KEY] == "01JF3ZK0000000000000000000"
    assert json.loads(encoded[h.DL_TRACEBACK]).startswith("Traceback")
    assert json.loads(encoded[h.DL_ORIGINAL_HEADERS])["traceparent"] == "00-ab-cd-01"
    assert encoded[h.DL_BODY_PARKED] == "2000000"


def test_encode_bounds_what_it_writes():
    encoded = full(
        error="x" * (MAX_ERROR + 500),
        traceback="t" * (MAX_TRACEBACK + 10),
        subject="orders.\x00created\nv1",
        ledger_key="k\r\n" * 10,
    ).encode()
    assert len(encoded[h.DL_ERROR]) == MAX_ERROR and encoded[h.DL_ERROR].endswith("…")
    assert len(json.loads(encoded[h.DL_TRACEBACK])) == MAX_TRACEBACK, "the last lines are kept"
    assert encoded[h.DL_SUBJECT] == "orders.\\x00created\\x0av1"
    assert "\r" not in encoded[h.DL_LEDGER_KEY] and "\n" not in encoded[h.DL_LEDGER_KEY]


def test_the_headers_of_a_delivery_that_failed():
    delivery = Delivery(
        stream="ORDERS",
        delivery_subject="redeliver.ORDERS.payments",
        data=b'{"message_id": "e-1"}',
        headers={
            h.ORIGINAL_SUBJECT: "orders.created.v1",
            h.LEDGER_KEY: "e-1",
            h.DEAD_LETTER_ID: "41",
            h.CONTENT_TYPE: "application/json",
        },
        stream_sequence=99,
        num_delivered=3,
    )
    made = DeadLetterHeaders.of("payments", delivery, PermanentError("card\nrefused   twice"), "tb")
    assert (made.consumer, made.stream, made.stream_sequence, made.subject) == (
        "payments", "ORDERS", 99, "orders.created.v1",
    )  # fmt: skip
    assert (made.attempts, made.error_type, made.error, made.traceback) == (
        3,
        "PermanentError",
        "card refused twice",
        "tb",
    )
    assert made.ledger_key == "e-1" and made.reprocessed_dead_letter_id == 41, "a failed redelivery points at its row"
    assert made.content_type == "application/json" and made.original_headers == delivery.headers
    assert DeadLetterHeaders.of("c", delivery, None).error == "Unknown", "no error: its type stands in"


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ({}, DeadLetterHeaders(consumer=None, stream=None, stream_sequence=None)),
        (
            {h.DL_SEQUENCE: "12a", h.DL_ATTEMPTS: "-1", h.DL_FAILED_AT: "yesterday", h.DL_ORIGINAL_HEADERS: "{no"},
            DeadLetterHeaders(consumer=None, stream=None, stream_sequence=None),
        ),
        (
            {h.DL_SEQUENCE: " 7 ", h.DL_TRACEBACK: "not json", h.DL_ORIGINAL_HEADERS: "[1, 2]"},
            DeadLetterHeaders(
                consumer=None, stream=None, stream_sequence=7, traceback="not json", original_headers=[1, 2]
            ),
        ),
        (
            {
                h.DL_REPROCESSED_DEAD_LETTER_ID: str(2**63),
                h.DL_BODY_PARKED: "lots",
                h.DL_FAILED_AT: "0001-01-01T00:00:00",
            },
            DeadLetterHeaders(consumer=None, stream=None, stream_sequence=None, parked_body_size=0),
        ),
    ],
    ids=["nothing", "unreadable-values", "odd-but-readable", "out-of-range"],
)
def test_decode_never_raises_on_what_another_publisher_wrote(read, expected):
    assert DeadLetterHeaders.decode(read) == expected


def test_a_redelivery_round_trips_and_other_messages_are_none():
    redelivery = Redelivery(original_subject="orders.created.v1", ledger_key="e-1", dead_letter_id=41)
    encoded = redelivery.encode()
    assert encoded == {h.ORIGINAL_SUBJECT: "orders.created.v1", h.LEDGER_KEY: "e-1", h.DEAD_LETTER_ID: "41"}
    assert Redelivery.decode(encoded) == redelivery
    assert Redelivery.decode({h.CONTENT_TYPE: "application/json"}) is NOT_A_REDELIVERY
    assert Redelivery.decode({h.DEAD_LETTER_ID: "²"}) == Redelivery(), "only ASCII digits make a row id"
    assert Redelivery.decode({h.DEAD_LETTER_ID: "1" * 19}).dead_letter_id is None, "beyond a row id"


def test_a_delivery_reads_its_subject_and_ids_through_the_codec():
    plain = Delivery("ORDERS", "orders.created.v1", b"{}", {h.NATS_MSG_ID: "n-1"}, 5, 1)
    assert (plain.subject, plain.ledger_key, plain.nats_msg_id, plain.redelivery) == (
        "orders.created.v1", "n-1", "n-1", NOT_A_REDELIVERY,
    )  # fmt: skip
    redelivered = Delivery(
        "ORDERS",
        "redeliver.ORDERS.payments",
        b'{"message_id": "e-1"}',
        {**Redelivery("orders.created.v1", "e-1", 41).encode(), h.NATS_MSG_ID: "redeliver:41:1"},
        6,
        1,
    )
    assert (redelivered.subject, redelivered.ledger_key, redelivered.event_id) == ("orders.created.v1", "e-1", "e-1")
    assert redelivered.nats_msg_id == "redeliver:41:1", "the broker's id is its own"
