"""The eventbus's own consumer (``dead-letters``): every dead letter becomes a DeadLetter row.

Whatever arrives on ``dlq.*`` ends as a row: a dead letter the runner published is
recorded with every value bounded (see ``dead_letter_record``); a message whose identity
(consumer, stream, sequence) is missing or unusable, which only someone else can publish,
is refused as poison, so the runner dead-letters it in turn and it is recorded as a dead
letter of this consumer, on the DLQ stream.
"""

from __future__ import annotations

import re

from django.utils import timezone

from apps.eventbus import headers
from apps.eventbus.bounds import clean_text
from apps.eventbus.consuming.delivery import Delivery, correlation_id_of
from apps.eventbus.deadletters.codec import DeadLetterHeaders
from apps.eventbus.deadletters.services import MAX_SEQUENCE, dead_letter_record
from apps.eventbus.errors import PermanentError
from apps.eventbus.models import DeadLetter

_NAME = re.compile(r"[^\x00-\x20\x7f.*>]+")  # one NATS subject token: what a consumer or stream name can be


def on_dead_letter(delivery: Delivery) -> None:
    read = DeadLetterHeaders.decode(delivery.headers)
    consumer = _identity(read.consumer, headers.DL_CONSUMER, DeadLetter._meta.get_field("consumer").max_length)
    stream = _identity(read.stream, headers.DL_STREAM, DeadLetter._meta.get_field("stream").max_length)
    sequence = read.stream_sequence
    if sequence is None or not 0 < sequence <= MAX_SEQUENCE:
        raise PermanentError(
            f"not a dead letter published by the eventbus: {headers.DL_SEQUENCE} is "
            f"{clean_text(delivery.headers.get(headers.DL_SEQUENCE, 'missing'), 40, single_line=True)!r}"
        )
    dead_letter_record(
        consumer=consumer,
        stream=stream,
        subject=read.subject,
        stream_sequence=sequence,
        message_id=read.ledger_key,
        correlation_id=correlation_id_of(delivery.data),
        data=delivery.data,
        headers=read.original_headers,
        error_type=read.error_type or "Unknown",
        error=read.error,
        traceback=read.traceback,
        attempts=read.attempts,
        failed_at=read.failed_at or timezone.now(),
        reprocessed_dead_letter_id=read.reprocessed_dead_letter_id,
        body_parked=read.parked_body_size is not None,
    )


def _identity(value: str | None, name: str, limit: int) -> str:
    """A consumer or stream name: required, and stored as it is (never cut: two names must not
    become one), else the message is poison."""
    if value is None or not _NAME.fullmatch(value) or len(value) > limit:
        shown = "missing" if value is None else repr(clean_text(value, 60, single_line=True))
        raise PermanentError(f"not a dead letter published by the eventbus: {name} is {shown}")
    return value
