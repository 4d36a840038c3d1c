"""A fetched message as the runner and raw handlers see it, and the outcomes the runner maps."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from apps.eventbus.contracts import ContractError, Event, decode

# Headers the eventbus itself sets.
H_MSG_ID = "Nats-Msg-Id"
H_MESSAGE_ID = "Eventbus-Message-Id"  # the original event's message_id, on redeliveries
H_ORIGINAL_SUBJECT = "Eventbus-Original-Subject"
H_DEAD_LETTER_ID = "Eventbus-Dead-Letter-Id"


def _ack_subject_fields(msg) -> tuple[str, int, int]:
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


_ID = re.compile(r"[0-9]{1,18}")  # a row id (str.isdigit() also takes "²", which int() refuses)

# What the ledger (and the dead-letter table) can hold of a delivery's key.
MAX_MESSAGE_ID = 100
MAX_SUBJECT = 200


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

    @property
    def subject(self) -> str:
        """The contract subject (the original one for a redelivery)."""
        return self.headers.get(H_ORIGINAL_SUBJECT, self.delivery_subject)

    @property
    def message_id(self) -> str:
        """The id the ledger keys on: the original event's (also on a redelivery), else the
        broker's message id, else the one in a body that failed validation, else the position."""
        if H_MESSAGE_ID in self.headers:
            return self.headers[H_MESSAGE_ID]
        if self.event is not None:
            return self.event.message_id
        return self.headers.get(H_MSG_ID) or _field(self._body, "message_id") or f"{self.stream}:{self.stream_sequence}"

    @property
    def dead_letter_id(self) -> int | None:
        value = self.headers.get(H_DEAD_LETTER_ID)
        return int(value) if value and _ID.fullmatch(value) else None

    @property
    def event_message_id(self) -> str:
        """The ``message_id`` inside the body (the event's own id), else :attr:`message_id`."""
        if self.event is not None:
            return self.event.message_id
        return _field(self._body, "message_id") or self.message_id

    @property
    def correlation_id(self) -> str:
        if self.event is not None:
            return self.event.correlation_id or ""
        return _field(self._body, "correlation_id")

    def field(self, name: str) -> str:
        """A text (or integer) field of the body, as text, or "" (a body that is not a JSON object
        included): for raw handlers, from the one parse of the body."""
        return _field(self._body, name)

    @cached_property
    def _body(self) -> dict:
        """The body parsed once, for the id properties of a message that was not decoded."""
        return _json_object(self.data)

    @classmethod
    def from_nats(cls, msg, *, decode_event: bool) -> Delivery:
        stream, num_delivered, stream_sequence = _ack_subject_fields(msg)
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
        if delivery.error is None and (reason := unstorable_key(delivery.message_id, delivery.subject)):
            delivery.error = ContractError(f"unusable message: {reason}")  # a poison message: dead-lettered at once
        return delivery


@dataclass(frozen=True)
class Outcome:
    kind: str  # handled | duplicate | retry | dead_letter | unavailable (the database is down)
    error: BaseException | None = None
    delay: float | None = None
    traceback: str = ""

    @classmethod
    def handled(cls) -> Outcome:
        return cls("handled")

    @classmethod
    def duplicate(cls) -> Outcome:
        return cls("duplicate")
