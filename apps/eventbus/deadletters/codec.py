"""The dead-letter wire format: every header a dead letter and a redelivery carry, written and
read in one place (:class:`DeadLetterHeaders`, :class:`Redelivery`; the names are in
:mod:`apps.eventbus.headers`).

A dead letter (``dlq.<consumer>``) has the original body, untouched, and headers saying where
and why it failed, with the original headers as JSON. NATS headers cannot hold a line break,
so multi-line texts are JSON-encoded. A redelivery (``redeliver.<STREAM>.<consumer>``, one
dead letter delivered again to the one consumer that failed it) says which contract subject,
which ledger key and which dead letter it stands for.

A dead letter is re-published, so it must fit the server's ``max_payload``, which counts
headers and body: :func:`fit_dead_letter` first shrinks the bounded headers (traceback,
original headers, with a marker); when the body itself cannot travel again, the runner keeps
it whole in the database (``DeadLetterBody``) and publishes the dead letter without it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apps.eventbus import headers
from apps.eventbus.bounds import clean_text, truncate
from apps.eventbus.registry import DLQ_PREFIX, DLQ_STREAM
from apps.eventbus.wire import MAX_HEADER_BLOCK, header_size, wire_size

if TYPE_CHECKING:
    from apps.eventbus.consuming.delivery import Delivery

MAX_ERROR = 2000
MAX_TRACEBACK = 16000
MAX_ID_HEADER = 1000  # a subject or ledger key copied into a header (the recorder keeps at most 200)
MAX_CONTENT_TYPE = 200
# What shrink_headers keeps when a dead letter does not fit as it is.
SHRUNK_TRACEBACK = 2000
SHRUNK_ORIGINAL_HEADERS = 4000  # bytes of JSON
SHRUNK_HEADER_VALUE = 256
MAX_ROW_ID = 2**63 - 1  # a dead letter's primary key (BigAutoField)

_NUMBER = re.compile(r"[0-9]{1,19}")
_ROW_ID = re.compile(r"[0-9]{1,18}")  # str.isdigit() also takes "²", which int() refuses


def dlq_subject(consumer: str) -> str:
    return f"{DLQ_PREFIX}.{consumer}"


def dlq_msg_id(consumer: str, stream: str, sequence: int) -> str:
    """The broker's id of a dead letter: one per consumer and stream message, even if two paths
    (the runner and the MAX_DELIVERIES advisory) report it."""
    return f"dlq:{consumer}:{stream}:{sequence}"


@dataclass(frozen=True)
class DeadLetterHeaders:
    """Where and why a message failed, as a dead letter's headers say it.

    ``encode`` bounds every value it writes; ``decode`` never raises on what another publisher
    may have put there (a missing or unreadable value is ``None``, ``""``, ``0`` or ``{}``):
    whoever reads decides what is acceptable (the recorder refuses a dead letter without its
    identity). ``encode`` then ``decode`` gives back the same values.
    """

    consumer: str | None
    stream: str | None
    stream_sequence: int | None
    subject: str = ""
    attempts: int = 0
    error_type: str = ""
    error: str = ""
    traceback: str = ""
    failed_at: datetime | None = None
    ledger_key: str = ""
    original_headers: Any = field(default_factory=dict)  # a JSON object, as it was decoded
    content_type: str = ""
    reprocessed_dead_letter_id: int | None = None  # the row a failed redelivery updates
    parked_body_size: int | None = None  # the body stayed behind in DeadLetterBody

    @classmethod
    def of(
        cls, consumer: str, delivery: Delivery, error: BaseException | None, traceback: str = ""
    ) -> DeadLetterHeaders:
        """The headers of ``delivery``'s dead letter for ``consumer``, failed with ``error``."""
        error_type = type(error).__name__ if error is not None else "Unknown"
        text = " ".join(str(error).split()) if error is not None else ""
        return cls(
            consumer=consumer,
            stream=delivery.stream,
            stream_sequence=delivery.stream_sequence,
            subject=delivery.subject,
            attempts=delivery.num_delivered,
            error_type=error_type,
            error=text[:MAX_ERROR] or error_type,
            traceback=traceback,
            failed_at=datetime.now(UTC),
            ledger_key=delivery.ledger_key,
            original_headers=delivery.headers,
            content_type=delivery.headers.get(headers.CONTENT_TYPE, "application/octet-stream"),
            reprocessed_dead_letter_id=delivery.redelivery.dead_letter_id,
        )

    def encode(self) -> dict[str, str]:
        written = {
            headers.NATS_MSG_ID: dlq_msg_id(self.consumer, self.stream, self.stream_sequence),
            headers.DL_CONSUMER: self.consumer,
            headers.DL_STREAM: self.stream,
            headers.DL_SUBJECT: clean_text(self.subject, MAX_ID_HEADER, single_line=True),
            headers.DL_SEQUENCE: str(self.stream_sequence),
            headers.DL_ATTEMPTS: str(self.attempts),
            headers.DL_ERROR_TYPE: self.error_type,
            headers.DL_ERROR: clean_text(self.error, MAX_ERROR, single_line=True),
            headers.DL_FAILED_AT: (self.failed_at or datetime.now(UTC)).isoformat(),
            headers.DL_LEDGER_KEY: clean_text(self.ledger_key, MAX_ID_HEADER, single_line=True),
            headers.DL_ORIGINAL_HEADERS: json.dumps(self.original_headers),
            headers.CONTENT_TYPE: clean_text(self.content_type, MAX_CONTENT_TYPE, single_line=True),
        }
        if self.traceback:
            written[headers.DL_TRACEBACK] = json.dumps(self.traceback[-MAX_TRACEBACK:])
        if self.reprocessed_dead_letter_id:
            written[headers.DL_REPROCESSED_DEAD_LETTER_ID] = str(self.reprocessed_dead_letter_id)
        if self.parked_body_size is not None:
            written[headers.DL_BODY_PARKED] = str(self.parked_body_size)
        return written

    @classmethod
    def decode(cls, read: dict[str, str]) -> DeadLetterHeaders:
        traceback = read.get(headers.DL_TRACEBACK)
        reprocessed = _number(read.get(headers.DL_REPROCESSED_DEAD_LETTER_ID))
        parked = read.get(headers.DL_BODY_PARKED)
        return cls(
            consumer=read.get(headers.DL_CONSUMER),
            stream=read.get(headers.DL_STREAM),
            stream_sequence=_number(read.get(headers.DL_SEQUENCE)),
            subject=read.get(headers.DL_SUBJECT, ""),
            attempts=_number(read.get(headers.DL_ATTEMPTS)) or 0,
            error_type=read.get(headers.DL_ERROR_TYPE, ""),
            error=read.get(headers.DL_ERROR, ""),
            traceback=_text(_json(traceback, default=traceback or "")),
            failed_at=_time(read.get(headers.DL_FAILED_AT)),
            ledger_key=read.get(headers.DL_LEDGER_KEY, ""),
            original_headers=_json(read.get(headers.DL_ORIGINAL_HEADERS), default={}),
            content_type=read.get(headers.CONTENT_TYPE, ""),
            reprocessed_dead_letter_id=reprocessed if reprocessed and reprocessed <= MAX_ROW_ID else None,
            parked_body_size=None if parked is None else (_number(parked) or 0),
        )


@dataclass(frozen=True)
class Redelivery:
    """What a redelivery says about the message it stands for. On any other message every field
    is ``None``: its subject is the one it arrived on, its ledger key its own."""

    original_subject: str | None = None
    ledger_key: str | None = None
    dead_letter_id: int | None = None  # resolved by the runner once the redelivery is handled

    def encode(self) -> dict[str, str]:
        written = {}
        if self.original_subject is not None:
            written[headers.ORIGINAL_SUBJECT] = self.original_subject
        if self.ledger_key is not None:
            written[headers.LEDGER_KEY] = self.ledger_key
        if self.dead_letter_id is not None:
            written[headers.DEAD_LETTER_ID] = str(self.dead_letter_id)
        return written

    @classmethod
    def decode(cls, read: dict[str, str]) -> Redelivery:
        if (
            headers.ORIGINAL_SUBJECT not in read
            and headers.LEDGER_KEY not in read
            and headers.DEAD_LETTER_ID not in read
        ):
            return NOT_A_REDELIVERY
        row = read.get(headers.DEAD_LETTER_ID)
        return cls(
            original_subject=read.get(headers.ORIGINAL_SUBJECT),
            ledger_key=read.get(headers.LEDGER_KEY),
            dead_letter_id=int(row) if row and _ROW_ID.fullmatch(row) else None,
        )


NOT_A_REDELIVERY = Redelivery()


def _number(value: str | None) -> int | None:
    return int(value) if value is not None and _NUMBER.fullmatch(value.strip()) else None


def _json(value: str | None, *, default):
    if value is None:
        return default
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return default


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _time(value: str | None) -> datetime | None:
    """A time as written (one without a zone is read as written); None when unreadable or out of range."""
    try:
        failed_at = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return failed_at if 2000 <= failed_at.year <= 9000 else None  # no overflow once made UTC


def publishable_size(written: dict[str, str] | None, body: bytes, max_payload: int) -> bool:
    """Whether the server and JetStream take a message this size: at most ``max_payload`` in
    all, and a header block of at most ``MAX_HEADER_BLOCK`` bytes."""
    return header_size(written) <= MAX_HEADER_BLOCK and wire_size(written, body) <= max_payload


def shrink_headers(written: dict[str, str]) -> dict[str, str]:
    """The dead letter's headers with its two large ones cut, each with a marker: the
    traceback to its last lines, the original headers to the first ones that fit (values
    cut too). The rest are already small."""
    shrunk = dict(written)
    if headers.DL_TRACEBACK in shrunk:
        try:
            traceback = json.loads(shrunk[headers.DL_TRACEBACK])
        except ValueError:
            traceback = shrunk[headers.DL_TRACEBACK]
        traceback = traceback if isinstance(traceback, str) else str(traceback)
        keep = len(traceback)
        while len(json.dumps(traceback[-keep:] if keep else "")) > SHRUNK_TRACEBACK:  # JSON-escaped bytes
            keep = keep * 2 // 3
        if keep < len(traceback):
            marker = f"[... {len(traceback) - keep} characters of the traceback left out to fit the server's limits]\n"
            shrunk[headers.DL_TRACEBACK] = json.dumps(marker + (traceback[-keep:] if keep else ""))
    if (
        headers.DL_ORIGINAL_HEADERS in shrunk
        and len(shrunk[headers.DL_ORIGINAL_HEADERS].encode()) > SHRUNK_ORIGINAL_HEADERS
    ):
        try:
            original = json.loads(shrunk[headers.DL_ORIGINAL_HEADERS])
        except ValueError:
            original = None
        items = list(original.items()) if isinstance(original, dict) else []
        kept: dict[str, str] = {}
        for name, value in items:
            candidate = {**kept, truncate(str(name), SHRUNK_HEADER_VALUE): truncate(str(value), SHRUNK_HEADER_VALUE)}
            if len(json.dumps(candidate)) > SHRUNK_ORIGINAL_HEADERS - 200:  # room for the marker
                break
            kept = candidate
        kept[headers.TRUNCATED] = (
            f"kept {len(kept)} of {len(items)} original headers (values cut to {SHRUNK_HEADER_VALUE} characters) "
            "to fit the server's limits"
        )
        shrunk[headers.DL_ORIGINAL_HEADERS] = json.dumps(kept)
    return shrunk


@dataclass(frozen=True)
class FittedDeadLetter:
    headers: dict[str, str]
    body: bytes
    parked: bool  # the body stays behind (DeadLetterBody): the runner must store it before publishing


def fit_dead_letter(written: dict[str, str], body: bytes, max_payload: int) -> FittedDeadLetter:
    """The dead letter as it can be published to a server with ``max_payload`` (and to
    JetStream, whose header block is bounded too: the original headers, JSON-escaped, can
    outgrow it on their own).

    As it is when it fits; else with :func:`shrink_headers`; else without its body (the
    whole headers again when they fit alone, else the shrunk ones; as a last resort
    without the traceback and original headers), pointing to the parked body.
    """

    def fits(candidate: dict[str, str], payload: bytes) -> bool:
        return publishable_size({**candidate, headers.NATS_EXPECTED_STREAM: DLQ_STREAM}, payload, max_payload)

    if fits(written, body):
        return FittedDeadLetter(written, body, parked=False)
    shrunk = shrink_headers(written)
    if fits(shrunk, body):
        return FittedDeadLetter(shrunk, body, parked=False)
    for candidate in (written, shrunk):
        pointer = {**candidate, headers.DL_BODY_PARKED: str(len(body))}
        if fits(pointer, b""):
            return FittedDeadLetter(pointer, b"", parked=True)
    bare = {
        name: value for name, value in shrunk.items() if name not in (headers.DL_TRACEBACK, headers.DL_ORIGINAL_HEADERS)
    }
    return FittedDeadLetter({**bare, headers.DL_BODY_PARKED: str(len(body))}, b"", parked=True)
