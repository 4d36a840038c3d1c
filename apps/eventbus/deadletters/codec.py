"""The dead-letter message format: what the runner publishes to ``dlq.<consumer>``.

Body: the original message body, untouched. Headers: the original ones (JSON, in
``Eventbus-Original-Headers``) and where and why it failed. NATS headers cannot hold a
line break, so multi-line texts are JSON-encoded.

A dead letter is re-published, so it must fit the server's ``max_payload``, which counts
headers and body: :func:`fit_dead_letter` first shrinks the bounded headers (traceback,
original headers, with a marker), and when the body itself cannot travel again, the
runner keeps it whole in the database (``DeadLetterBody``, keyed by the dead letter's
identity) and publishes the dead letter without it, with ``Eventbus-Body-Parked: <size>``;
the dead-letters consumer records the row with that body.

Also here: the bounds every value from outside gets before it reaches a column, a log or
a header (:func:`clean_text`, :func:`clean_headers`, :func:`copyable_headers`). The wire
size of a message and the limits are in :mod:`apps.eventbus.wire`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from apps.eventbus.consuming.delivery import H_MSG_ID, Delivery, Outcome
from apps.eventbus.registry import DLQ_PREFIX, DLQ_STREAM
from apps.eventbus.wire import HEADER_NAME, MAX_HEADER_BLOCK, header_size, wire_size

H_CONSUMER = "Eventbus-Consumer"
H_STREAM = "Eventbus-Stream"
H_SUBJECT = "Eventbus-Subject"
H_SEQUENCE = "Eventbus-Sequence"
H_ATTEMPTS = "Eventbus-Attempts"
H_ERROR_TYPE = "Eventbus-Error-Type"
H_ERROR = "Eventbus-Error"
H_TRACEBACK = "Eventbus-Traceback"
H_FAILED_AT = "Eventbus-Failed-At"
H_ORIGINAL_MESSAGE_ID = "Eventbus-Original-Message-Id"
H_ORIGINAL_HEADERS = "Eventbus-Original-Headers"
# A reprocessed message that failed again (not Eventbus-Dead-Letter-Id: that one asks the
# runner to resolve the row, which the dead-letters consumer must not do).
H_REPROCESSED_DEAD_LETTER_ID = "Eventbus-Reprocessed-Dead-Letter-Id"
# The body (this many bytes) did not fit with the headers: the runner kept it in the
# database (DeadLetterBody) and the dead letter travels with an empty body.
H_BODY_PARKED = "Eventbus-Body-Parked"
# Set inside the original headers when some were left out to fit (see shrink_headers).
H_TRUNCATED = "Eventbus-Truncated"

MAX_ERROR = 2000
MAX_TRACEBACK = 16000
MAX_ID_HEADER = 1000  # a subject or message id copied into a header (the recorder keeps at most 200)
# What shrink_headers keeps when a dead letter does not fit as it is.
SHRUNK_TRACEBACK = 2000
SHRUNK_ORIGINAL_HEADERS = 4000  # bytes of JSON
SHRUNK_HEADER_VALUE = 256

# Headers copied from a stored message to a re-published one (see copyable_headers).
MAX_COPIED_HEADERS = 32
MAX_COPIED_NAME = 64
MAX_COPIED_VALUE = 1024
MAX_COPIED_TOTAL = 8192
# Headers kept on a DeadLetter row for people to read (see clean_headers).
MAX_KEPT_HEADERS = 64
MAX_KEPT_NAME = 200
MAX_KEPT_VALUE = 4000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Header prefixes that make JetStream act (Nats-Expected-*, Nats-Rollup, Nats-TTL, Nats-Schedule*,
# Nats-Msg-Id, ...) or that the eventbus sets itself: never copied from a stored message.
CONTROL_HEADER_PREFIXES = ("nats-", "eventbus-")


def dlq_subject(consumer: str) -> str:
    return f"{DLQ_PREFIX}.{consumer}"


def dlq_msg_id(consumer: str, stream: str, sequence: int) -> str:
    """One dead letter per consumer and stream message, even if two paths report it."""
    return f"dlq:{consumer}:{stream}:{sequence}"


# -- bounding values from outside --------------------------------------------------------------


def truncate(text: str, limit: int | None) -> str:
    """At most ``limit`` characters; a cut one ends with "…"."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def clean_text(value, limit: int | None = None, *, single_line: bool = False) -> str:
    """Text any PostgreSQL text column, log line or (``single_line``) header can hold.

    NUL (which PostgreSQL text and jsonb refuse) becomes ``\\x00``, a lone surrogate its
    ``\\udcxx`` escape; ``single_line`` escapes every control character (line breaks
    included). Then cut to ``limit`` characters with a marker.
    """
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(_escape, text) if single_line else text.replace("\x00", "\\x00")
    return truncate(text, limit)


def _escape(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


def body_text(body: bytes) -> tuple[str, bool]:
    """(the body as text for a text column, whether that text is the body exactly).

    Not UTF-8, or holding NUL: shown escaped (``\\xff``, ``\\x00``); the exact bytes then
    have to be kept elsewhere (``DeadLetter.raw_data``).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("utf-8", "backslashreplace").replace("\x00", "\\x00"), False
    if "\x00" in text:
        return text.replace("\x00", "\\x00"), False
    return text, True


def clean_headers(value) -> dict[str, str]:
    """Headers as a DeadLetter row keeps them: a flat ``{str: str}`` jsonb can hold, bounded in
    count and size (a marker under ``Eventbus-Truncated`` says what was left out)."""
    if not isinstance(value, dict):
        return {H_TRUNCATED: "the original headers were not a JSON object"} if value not in (None, "") else {}
    items = list(value.items())
    kept: dict[str, str] = {}
    for name, header_value in items[:MAX_KEPT_HEADERS]:
        text = header_value if isinstance(header_value, str) else json.dumps(header_value, default=str)
        kept[clean_text(name, MAX_KEPT_NAME, single_line=True)] = clean_text(text, MAX_KEPT_VALUE)
    if len(items) > MAX_KEPT_HEADERS:
        kept[H_TRUNCATED] = f"kept {MAX_KEPT_HEADERS} of {len(items)} headers"
    return kept


def copyable_headers(headers: dict) -> tuple[dict[str, str], list[str]]:
    """The headers of a stored message that may be copied onto a re-published one, and the
    names of those left out.

    Left out: every ``Nats-*`` header (they make JetStream act: expected sequence or stream,
    rollup, TTL, schedules, the de-duplication id), the eventbus's own ``Eventbus-*`` ones
    (it sets its own), names nats-py or the server would refuse, values with a line break,
    NUL or other control character, and whatever goes beyond the bounds (count, name and
    value length, total size): a dropped header is better than a corrupted one.
    """
    kept: dict[str, str] = {}
    dropped: list[str] = []
    total = 0
    for name, value in headers.items() if isinstance(headers, dict) else ():
        name_text = str(name)
        ok = (
            isinstance(value, str)
            and HEADER_NAME.fullmatch(name_text) is not None
            and not name_text.lower().startswith(CONTROL_HEADER_PREFIXES)
            and len(name_text) <= MAX_COPIED_NAME
            and len(value) <= MAX_COPIED_VALUE
            and not _CONTROL.search(value)
            and value.strip() == value
            and len(kept) < MAX_COPIED_HEADERS
            and total + len(name_text) + len(value.encode()) + 4 <= MAX_COPIED_TOTAL
        )
        if ok:
            kept[name_text] = value
            total += len(name_text) + len(value.encode()) + 4
        else:
            dropped.append(clean_text(name_text, MAX_COPIED_NAME, single_line=True))
    return kept, dropped


def publishable_size(headers: dict[str, str] | None, body: bytes, max_payload: int) -> bool:
    """Whether the server and JetStream take a message this size: at most ``max_payload`` in
    all, and a header block of at most ``MAX_HEADER_BLOCK`` bytes."""
    return header_size(headers) <= MAX_HEADER_BLOCK and wire_size(headers, body) <= max_payload


# -- the dead letter ------------------------------------------------------------------------


def dead_letter_headers(consumer: str, delivery: Delivery, outcome: Outcome) -> dict[str, str]:
    error = outcome.error
    error_type = type(error).__name__ if error is not None else "Unknown"
    text = " ".join(str(error).split()) if error is not None else ""
    headers = {
        H_MSG_ID: dlq_msg_id(consumer, delivery.stream, delivery.stream_sequence),
        H_CONSUMER: consumer,
        H_STREAM: delivery.stream,
        H_SUBJECT: clean_text(delivery.subject, MAX_ID_HEADER, single_line=True),
        H_SEQUENCE: str(delivery.stream_sequence),
        H_ATTEMPTS: str(delivery.num_delivered),
        H_ERROR_TYPE: error_type,
        H_ERROR: clean_text(text[:MAX_ERROR] or error_type, MAX_ERROR, single_line=True),
        H_FAILED_AT: datetime.now(UTC).isoformat(),
        H_ORIGINAL_MESSAGE_ID: clean_text(delivery.message_id, MAX_ID_HEADER, single_line=True),
        H_ORIGINAL_HEADERS: json.dumps(delivery.headers),
        "Content-Type": clean_text(
            delivery.headers.get("Content-Type", "application/octet-stream"), 200, single_line=True
        ),
    }
    if outcome.traceback:
        headers[H_TRACEBACK] = json.dumps(outcome.traceback[-MAX_TRACEBACK:])
    if delivery.dead_letter_id:
        headers[H_REPROCESSED_DEAD_LETTER_ID] = str(delivery.dead_letter_id)
    return headers


def shrink_headers(headers: dict[str, str]) -> dict[str, str]:
    """The dead letter's headers with its two large ones cut, each with a marker: the
    traceback to its last lines, the original headers to the first ones that fit (values
    cut too). The rest are already small."""
    shrunk = dict(headers)
    if H_TRACEBACK in shrunk:
        try:
            traceback = json.loads(shrunk[H_TRACEBACK])
        except ValueError:
            traceback = shrunk[H_TRACEBACK]
        traceback = traceback if isinstance(traceback, str) else str(traceback)
        keep = len(traceback)
        while len(json.dumps(traceback[-keep:] if keep else "")) > SHRUNK_TRACEBACK:  # JSON-escaped bytes
            keep = keep * 2 // 3
        if keep < len(traceback):
            marker = f"[... {len(traceback) - keep} characters of the traceback left out to fit the server's limits]\n"
            shrunk[H_TRACEBACK] = json.dumps(marker + (traceback[-keep:] if keep else ""))
    if H_ORIGINAL_HEADERS in shrunk and len(shrunk[H_ORIGINAL_HEADERS].encode()) > SHRUNK_ORIGINAL_HEADERS:
        try:
            original = json.loads(shrunk[H_ORIGINAL_HEADERS])
        except ValueError:
            original = None
        items = list(original.items()) if isinstance(original, dict) else []
        kept: dict[str, str] = {}
        for name, value in items:
            candidate = {**kept, truncate(str(name), SHRUNK_HEADER_VALUE): truncate(str(value), SHRUNK_HEADER_VALUE)}
            if len(json.dumps(candidate)) > SHRUNK_ORIGINAL_HEADERS - 200:  # room for the marker
                break
            kept = candidate
        kept[H_TRUNCATED] = (
            f"kept {len(kept)} of {len(items)} original headers (values cut to {SHRUNK_HEADER_VALUE} characters) "
            "to fit the server's limits"
        )
        shrunk[H_ORIGINAL_HEADERS] = json.dumps(kept)
    return shrunk


@dataclass(frozen=True)
class FittedDeadLetter:
    headers: dict[str, str]
    body: bytes
    parked: bool  # the body stays behind (DeadLetterBody): the runner must store it before publishing


def fit_dead_letter(headers: dict[str, str], body: bytes, max_payload: int) -> FittedDeadLetter:
    """The dead letter as it can be published to a server with ``max_payload`` (and to
    JetStream, whose header block is bounded too: the original headers, JSON-escaped, can
    outgrow it on their own).

    As it is when it fits; else with :func:`shrink_headers`; else without its body (the
    whole headers again when they fit alone, else the shrunk ones; as a last resort
    without the traceback and original headers), pointing to the parked body.
    """

    def fits(candidate: dict[str, str], payload: bytes) -> bool:
        return publishable_size({**candidate, "Nats-Expected-Stream": DLQ_STREAM}, payload, max_payload)

    if fits(headers, body):
        return FittedDeadLetter(headers, body, parked=False)
    shrunk = shrink_headers(headers)
    if fits(shrunk, body):
        return FittedDeadLetter(shrunk, body, parked=False)
    for candidate in (headers, shrunk):
        pointer = {**candidate, H_BODY_PARKED: str(len(body))}
        if fits(pointer, b""):
            return FittedDeadLetter(pointer, b"", parked=True)
    bare = {name: value for name, value in shrunk.items() if name not in (H_TRACEBACK, H_ORIGINAL_HEADERS)}
    return FittedDeadLetter({**bare, H_BODY_PARKED: str(len(body))}, b"", parked=True)
