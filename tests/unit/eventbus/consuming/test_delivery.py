"""apps/eventbus/consuming/delivery.py: the ack subject, the bounds of a ledger key, body fields."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from nats.aio.msg import Msg

from apps.eventbus.consuming.delivery import (
    MAX_MESSAGE_ID,
    MAX_SUBJECT,
    Delivery,
    ack_subject_fields,
    correlation_id_of,
    unstorable_key,
)
from apps.eventbus.contracts import ContractError

NOW_NS = "1700000000123456789"


def v1(stream="ORDERS", consumer="payments", delivered=3, stream_seq=42, consumer_seq=17, pending=5) -> str:
    return f"$JS.ACK.{stream}.{consumer}.{delivered}.{stream_seq}.{consumer_seq}.{NOW_NS}.{pending}"


def v2(stream="ORDERS", consumer="payments", delivered=3, stream_seq=42, domain="hub", extra=("r4nd0m",)) -> str:
    return ".".join(["$JS", "ACK", domain, "ACCHASH", stream, consumer, str(delivered), str(stream_seq), "17", NOW_NS,
                     "5", *extra])  # fmt: skip


class ParsedMessage:
    """A message whose reply subject must be enough: reading ``metadata`` fails the test."""

    def __init__(self, reply):
        self.reply = reply

    @property
    def metadata(self):
        raise AssertionError("the reply subject should have been parsed without nats-py's metadata")


def fallback_message(reply):
    """A message whose reply subject is not parsed: the answer comes from ``metadata``."""
    metadata = SimpleNamespace(stream="FROM-METADATA", num_delivered=9, sequence=SimpleNamespace(stream=99))
    return SimpleNamespace(reply=reply, metadata=metadata)


# -- the ack subject -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (v1(), ("ORDERS", 3, 42)),
        (v1(stream="DLQ", consumer="dead-letters", delivered=1, stream_seq=1), ("DLQ", 1, 1)),
        (v1(delivered=20, stream_seq=2**63 - 1), ("ORDERS", 20, 2**63 - 1)),
        (v1(consumer_seq=999_999, pending=0), ("ORDERS", 3, 42)),  # the consumer sequence is not the stream's
        (v2(), ("ORDERS", 3, 42)),
        (v2(domain="_"), ("ORDERS", 3, 42)),  # no domain
        (v2(stream="PAYMENTS", delivered=1, stream_seq=7), ("PAYMENTS", 1, 7)),
        (v2(extra=("r4nd0m", "future", "tokens")), ("ORDERS", 3, 42)),  # 14 tokens: more at the end are ignored
    ],
)
def test_ack_subject_fields_parses_the_reply_subject(reply, expected):
    assert len(reply.split(".")) in (9, 12, 14)
    assert ack_subject_fields(ParsedMessage(reply)) == expected


@pytest.mark.parametrize(
    "reply",
    [
        None,
        "",
        "_INBOX.abc.def",
        v1().rsplit(".", 1)[0],  # 8 tokens
        v1() + ".x",  # 10 tokens
        v2(extra=()),  # 11 tokens: left to nats-py
        "$JS.NAK.ORDERS.payments.3.42.17.1700000000123456789.5",  # 9 tokens, not an ack subject
        "$JS.NAK.hub.ACCHASH.ORDERS.payments.3.42.17.1700000000123456789.5.r",  # 12 tokens, not one either
    ],
)
def test_ack_subject_fields_falls_back_to_metadata(reply):
    assert ack_subject_fields(fallback_message(reply)) == ("FROM-METADATA", 9, 99)


@pytest.mark.parametrize(
    "reply",
    [
        v1(),
        v1(stream="S_1-x", delivered=11, stream_seq=123456),
        v2(),
        v2(domain="_"),
        v2(extra=()),
        v2(extra=("a", "b")),
    ],
)
def test_ack_subject_fields_agrees_with_nats_py(reply):
    msg = Msg(_client=None, subject="orders.created.v1", reply=reply, data=b"")
    meta = msg.metadata
    assert ack_subject_fields(msg) == (meta.stream, meta.num_delivered, meta.sequence.stream)


# -- what the ledger can hold -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_id", "subject", "expected"),
    [
        ("m" * MAX_MESSAGE_ID, "s" * MAX_SUBJECT, None),  # at the limits
        ("", "", None),
        ("é" * MAX_MESSAGE_ID, "ü" * MAX_SUBJECT, None),  # characters are counted, not bytes
        ("m" * (MAX_MESSAGE_ID + 1), "s", f"its message id is {MAX_MESSAGE_ID + 1} characters long; at most 100"),
        ("m", "s" * (MAX_SUBJECT + 1), f"its subject is {MAX_SUBJECT + 1} characters long; at most 200"),
        ("a\x00b", "s", "its message id contains a NUL character"),
        ("m", "orders.\x00", "its subject contains a NUL character"),
        ("\x00", "s" * 1000, "its message id contains a NUL character"),  # the id is checked first
        ("\x00" * 101, "s", "its message id is 101 characters long"),  # length before NUL
    ],
)
def test_unstorable_key(message_id, subject, expected):
    reason = unstorable_key(message_id, subject)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(expected)


def test_the_limits_are_those_of_the_ledger():
    from apps.eventbus.models import ProcessedMessage

    assert ProcessedMessage._meta.get_field("message_id").max_length == MAX_MESSAGE_ID
    assert ProcessedMessage._meta.get_field("subject").max_length == MAX_SUBJECT


# -- fields of the body -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"correlation_id": "order-1"}', "order-1"),
        (b'{"correlation_id": 42}', "42"),  # an integer id, as text
        (b'{"correlation_id": 0}', "0"),
        (b'{"correlation_id": -7}', "-7"),
        (b'{"correlation_id": true}', ""),  # a bool is not an id
        (b'{"correlation_id": false}', ""),
        (b'{"correlation_id": ""}', ""),
        (b'{"correlation_id": null}', ""),
        (b'{"correlation_id": 1.5}', ""),
        (b'{"correlation_id": ["a"]}', ""),
        (b'{"correlation_id": {"a": 1}}', ""),
        (b'{"other": "x"}', ""),
        (b"{}", ""),
        (b'["correlation_id", "x"]', ""),  # not an object
        (b'"correlation_id"', ""),
        (b"null", ""),
        (b"", ""),
        (b"not json", ""),
        (b"\xff\xfe", ""),  # not UTF-8
        (b"[" * 100_000, ""),  # nested beyond the parser's recursion limit
        (b'{"a":' * 100_000, ""),
        ('{"correlation_id": "çå-✓"}'.encode(), "çå-✓"),
    ],
)
def test_correlation_id_of(body, expected):
    assert correlation_id_of(body) == expected


def test_a_repeated_key_keeps_the_last_value():
    assert correlation_id_of(b'{"correlation_id": "a", "correlation_id": "b"}') == "b"


# -- a delivery from a fetched message ------------------------------------------------------------------


def fetched(*, subject="orders.created.v1", data=b"{}", headers=None, reply=None):
    return SimpleNamespace(subject=subject, reply=reply or v1(), data=data, headers=headers)


def test_from_nats_takes_the_position_from_the_reply_subject():
    msg = fetched(data=b'{"order_id": "o-1", "n": 3}', reply=v1(stream="ORDERS", delivered=2, stream_seq=77))
    delivery = Delivery.from_nats(msg, decode_event=False)
    assert (delivery.stream, delivery.num_delivered, delivery.stream_sequence) == ("ORDERS", 2, 77)
    assert delivery.delivery_subject == "orders.created.v1"
    assert delivery.headers == {}  # no headers at all becomes an empty mapping
    assert delivery.raw_message is msg
    assert delivery.event is None
    assert delivery.error is None
    assert delivery.field("order_id") == "o-1"
    assert delivery.field("n") == "3"
    assert delivery.field("missing") == ""


def test_from_nats_makes_an_unstorable_subject_a_poison_message():
    delivery = Delivery.from_nats(fetched(subject="orders." + "x" * MAX_SUBJECT), decode_event=False)
    assert isinstance(delivery.error, ContractError)
    assert "unusable message: its subject is 207 characters long" in str(delivery.error)


def test_from_nats_makes_an_unstorable_body_id_a_poison_message():
    delivery = Delivery.from_nats(fetched(data=b'{"message_id": "a\\u0000b"}'), decode_event=False)
    assert isinstance(delivery.error, ContractError)
    assert "NUL" in str(delivery.error)


def test_from_nats_keeps_a_storable_body_id():
    delivery = Delivery.from_nats(fetched(data=b'{"message_id": "' + b"m" * MAX_MESSAGE_ID + b'"}'), decode_event=False)
    assert delivery.error is None


def test_from_nats_reports_an_undecodable_body_as_the_contract_error():
    delivery = Delivery.from_nats(fetched(subject="nobody.knows.v1", data=b"{}"), decode_event=True)
    assert isinstance(delivery.error, ContractError)
    assert "no contract is registered" in str(delivery.error)
    assert delivery.event is None
