"""The eventbus's own consumer: every dead letter becomes a DeadLetter row.

Whatever arrives on ``dlq.*`` ends as a row: a dead letter the runner published is
recorded with every value bounded (see ``dead_letter_record``); a message whose identity
(consumer, stream, sequence) is missing or unusable, which only someone else can publish,
is refused as poison, so the runner dead-letters it in turn and it is recorded as a dead
letter of this consumer, on the DLQ stream.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from django.utils import timezone

from apps.eventbus.consuming.delivery import Delivery, correlation_id_of
from apps.eventbus.deadletters import codec as dl
from apps.eventbus.deadletters.services import MAX_SEQUENCE, dead_letter_record
from apps.eventbus.errors import PermanentError
from apps.eventbus.models import DeadLetter

_NAME = re.compile(r"[^\x00-\x20\x7f.*>]+")  # one NATS subject token: what a consumer or stream name can be
_NUMBER = re.compile(r"[0-9]{1,19}")


def on_dead_letter(delivery: Delivery) -> None:
    headers = delivery.headers
    consumer = _identity(headers, dl.H_CONSUMER, DeadLetter._meta.get_field("consumer").max_length)
    stream = _identity(headers, dl.H_STREAM, DeadLetter._meta.get_field("stream").max_length)
    sequence = _number(headers.get(dl.H_SEQUENCE))
    if sequence is None or not 0 < sequence <= MAX_SEQUENCE:
        raise PermanentError(
            f"not a dead letter published by the eventbus: {dl.H_SEQUENCE} is "
            f"{dl.clean_text(headers.get(dl.H_SEQUENCE, 'missing'), 40, single_line=True)!r}"
        )
    reprocessed = _number(headers.get(dl.H_REPROCESSED_DEAD_LETTER_ID))
    dead_letter_record(
        consumer=consumer,
        stream=stream,
        subject=headers.get(dl.H_SUBJECT, ""),
        stream_sequence=sequence,
        message_id=headers.get(dl.H_ORIGINAL_MESSAGE_ID, ""),
        correlation_id=correlation_id_of(delivery.data),
        data=delivery.data,
        headers=_json(headers.get(dl.H_ORIGINAL_HEADERS), default={}),
        error_type=headers.get(dl.H_ERROR_TYPE) or "Unknown",
        error=headers.get(dl.H_ERROR, ""),
        traceback=_text(_json(headers.get(dl.H_TRACEBACK), default=headers.get(dl.H_TRACEBACK, ""))),
        attempts=_number(headers.get(dl.H_ATTEMPTS)) or 0,
        failed_at=_time(headers.get(dl.H_FAILED_AT)),
        reprocessed_dead_letter_id=reprocessed if reprocessed and reprocessed <= MAX_SEQUENCE else None,
        body_parked=dl.H_BODY_PARKED in headers,
    )


def _identity(headers: dict[str, str], name: str, limit: int) -> str:
    """A consumer or stream name: required, and stored as it is (never cut: two names must not
    become one), else the message is poison."""
    value = headers.get(name)
    if value is None or not _NAME.fullmatch(value) or len(value) > limit:
        shown = "missing" if value is None else repr(dl.clean_text(value, 60, single_line=True))
        raise PermanentError(f"not a dead letter published by the eventbus: {name} is {shown}")
    return value


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


def _time(value: str | None) -> datetime:
    """When it failed (a time without a zone is UTC, see dead_letter_record); now when unreadable."""
    try:
        failed_at = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return timezone.now()
    return failed_at if 2000 <= failed_at.year <= 9000 else timezone.now()  # no overflow once made UTC
