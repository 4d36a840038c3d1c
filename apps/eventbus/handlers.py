"""The eventbus's own consumer: every dead letter becomes a DeadLetter row."""

from __future__ import annotations

import json
from datetime import datetime

from django.utils import timezone

from . import deadletters as dl
from .delivery import Delivery, correlation_id_of
from .errors import PermanentError
from .services import dead_letter_record


def on_dead_letter(delivery: Delivery) -> None:
    headers = delivery.headers
    try:
        consumer, stream = headers[dl.H_CONSUMER], headers[dl.H_STREAM]
        sequence, attempts = int(headers[dl.H_SEQUENCE]), int(headers.get(dl.H_ATTEMPTS, "0"))
    except (KeyError, ValueError) as exc:
        raise PermanentError(f"not a dead letter published by the eventbus: {exc}") from None
    try:
        original_headers = json.loads(headers.get(dl.H_ORIGINAL_HEADERS, "{}"))
        traceback = json.loads(headers[dl.H_TRACEBACK]) if dl.H_TRACEBACK in headers else ""
    except ValueError:
        original_headers, traceback = {}, ""
    try:
        failed_at = datetime.fromisoformat(headers[dl.H_FAILED_AT])
    except (KeyError, ValueError):
        failed_at = timezone.now()
    reprocessed = headers.get(dl.H_REPROCESSED_DEAD_LETTER_ID)
    dead_letter_record(
        consumer=consumer,
        stream=stream,
        subject=headers.get(dl.H_SUBJECT, ""),
        stream_sequence=sequence,
        message_id=headers.get(dl.H_ORIGINAL_MESSAGE_ID, ""),
        correlation_id=correlation_id_of(delivery.data),
        data=delivery.data.decode(errors="replace"),
        headers=original_headers,
        error_type=headers.get(dl.H_ERROR_TYPE, "Unknown"),
        error=headers.get(dl.H_ERROR, ""),
        traceback=traceback,
        attempts=attempts,
        failed_at=failed_at,
        reprocessed_dead_letter_id=int(reprocessed) if reprocessed and reprocessed.isdigit() else None,
    )
