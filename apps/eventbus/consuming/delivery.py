"""A fetched message as the runner and raw handlers see it: where it came from, its ids, its
contract subject (the original one for a redelivery) and, for a decoding consumer, its event."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from opentelemetry import trace

from apps.eventbus import headers
from apps.eventbus.bounds import log_value
from apps.eventbus.contracts import ContractError, Event, decode
from apps.eventbus.deadletters.codec import Redelivery
from apps.eventbus.tracing import context_from


def ack_subject_fields(msg) -> tuple[str, int, int]:
    """Stream, delivery count and stream sequence from a JetStream message's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or the newer form with ``<domain>.<account hash>`` after ``$JS.ACK`` and a token at the
    end. Parsed here because nats-py's ``msg.metadata`` builds several objects per message
    on the hot path; anything unexpected falls back to it.
    """
    tokens = msg.reply.split(".") if msg.reply else []
    if len(tokens) == 9 and tokens[1] == "ACK":
        return tokens[2], int(tokens[4]), int(tokens[5])
    if len(tokens) >= 12 and tokens[1] == "ACK":
        return tokens[4], int(tokens[6]), int(tokens[7])
    meta = msg.metadata
    return meta.stream, meta.num_delivered, meta.sequence.stream


def correlation_id_of(data: bytes) -> str:
    """The ``correlation_id`` of a JSON body, or "" (for bodies that are not valid events)."""
    return _field(_json_object(data), "correlation_id")


def _json_object(data: bytes) -> dict:
    """The body's top-level JSON object, or {} for anything else (deep nesting included)."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _field(body: dict, name: str) -> str:
    value = body.get(name)
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else ""


# What the ledger (and the dead-letter table) can hold of a delivery's key.
MAX_MESSAGE_ID = 100
MAX_SUBJECT = 200
MAX_LOGGED_ERROR = 2000


def unstorable_key(message_id: str, subject: str) -> str | None:
    """Why the ledger cannot record this message id or subject, if it cannot."""
    for name, value, limit in (("message id", message_id, MAX_MESSAGE_ID), ("subject", subject, MAX_SUBJECT)):
        if len(value) > limit:
            return f"its {name} is {len(value)} characters long; at most {limit} are accepted"
        if "\x00" in value:
            return f"its {name} contains a NUL character"
    return None


@dataclass
class Delivery:
    """One message fetched for one consumer. Raw handlers receive it; they never ack it."""

    stream: str
    delivery_subject: str  # the subject it arrived on (redeliver.<STREAM>.<consumer> for reprocessing)
    data: bytes
    headers: dict[str, str]
    stream_sequence: int
    num_delivered: int
    event: Event | None = None
    error: Exception | None = None  # why it could not be decoded: a poison message
    raw_message: Any = field(default=None, repr=False)

    @cached_property
    def redelivery(self) -> Redelivery:
        """What the message says about the one it stands for, when it is a redelivery."""
        return Redelivery.decode(self.headers)

    @property
    def subject(self) -> str:
        """The contract subject (the original one for a redelivery)."""
        original = self.redelivery.original_subject
        return original if original is not None else self.delivery_subject

    @property
    def ledger_key(self) -> str:
        """What the idempotency ledger keys on: the original message's key on a redelivery, else the
        event's id, else the broker's id, else the id in a body that failed validation, else the
        stream position."""
        if (original := self.redelivery.ledger_key) is not None:
            return original
        if self.event is not None:
            return self.event.message_id
        return self.nats_msg_id or _field(self._body, "message_id") or f"{self.stream}:{self.stream_sequence}"

    @property
    def nats_msg_id(self) -> str:
        """The broker's de-duplication id (``Nats-Msg-Id``), or ""."""
        return self.headers.get(headers.NATS_MSG_ID, "")

    @property
    def event_id(self) -> str:
        """The event's own id (``message_id`` in the body), else :attr:`ledger_key`."""
        if self.event is not None:
            return self.event.message_id
        return _field(self._body, "message_id") or self.ledger_key

    @property
    def correlation_id(self) -> str:
        if self.event is not None:
            return self.event.correlation_id or ""
        return _field(self._body, "correlation_id")

    def field(self, name: str) -> str:
        """A text (or integer) field of the body, as text, or "" (a body that is not a JSON object
        included): for raw handlers, from the one parse of the body."""
        return _field(self._body, name)

    def log(self, logger: logging.Logger, level: int, what: str, consumer: str, error: BaseException | None) -> None:
        """One line about what ``consumer`` did with this message, every value from it bounded."""
        logger.log(
            level,
            "%s %s seq %s: %s",
            what,
            log_value(self.subject),
            self.stream_sequence,
            log_value(str(error), MAX_LOGGED_ERROR),
            extra={
                "consumer": consumer,
                "subject": log_value(self.subject),
                "message_id": log_value(self.ledger_key),
                "correlation_id": log_value(self.correlation_id),
                "attempt": self.num_delivered,
                **self._trace_fields(),
            },
        )

    def _trace_fields(self) -> dict[str, str]:
        """The message's own trace (its ``traceparent``), for a line logged outside its span."""
        if "traceparent" not in self.headers:
            return {}
        context = trace.get_current_span(context_from(self.headers)).get_span_context()
        return {"trace_id": format(context.trace_id, "032x")} if context.is_valid else {}

    @cached_property
    def _body(self) -> dict:
        """The body parsed once, for the id properties of a message that was not decoded."""
        return _json_object(self.data)

    @classmethod
    def from_nats(cls, msg, *, decode_event: bool) -> Delivery:
        stream, num_delivered, stream_sequence = ack_subject_fields(msg)
        delivery = cls(
            stream=stream,
            delivery_subject=msg.subject,
            data=msg.data,
            headers=msg.headers or {},
            stream_sequence=stream_sequence,
            num_delivered=num_delivered,
            raw_message=msg,
        )
        if decode_event:
            try:
                delivery.event = decode(delivery.subject, msg.data)
            except ContractError as exc:
                delivery.error = exc
        if delivery.error is None and (reason := unstorable_key(delivery.ledger_key, delivery.subject)):
            delivery.error = ContractError(f"unusable message: {reason}")  # a poison message: dead-lettered at once
        return delivery
