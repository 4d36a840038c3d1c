"""Dead letters: recording, reprocessing, discarding. The only code that changes them."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .delivery import H_DEAD_LETTER_ID, H_MESSAGE_ID, H_MSG_ID, H_ORIGINAL_SUBJECT
from .models import DeadLetter, DeadLetterEvent
from .outbox import outbox_write_raw
from .registry import REDELIVER_PREFIX


class DeadLetterStateError(Exception):
    """The requested action does not apply to the dead letter's current status."""


@transaction.atomic
def dead_letter_record(
    *,
    consumer: str,
    stream: str,
    subject: str,
    stream_sequence: int,
    message_id: str,
    correlation_id: str,
    data: str,
    headers: dict[str, str],
    error_type: str,
    error: str,
    attempts: int,
    failed_at: datetime,
    reprocessed_dead_letter_id: int | None = None,
) -> DeadLetter:
    """Record one failure. A message that failed again after a reprocess updates its first row."""
    if reprocessed_dead_letter_id is not None:
        dead_letter = DeadLetter.objects.select_for_update().filter(pk=reprocessed_dead_letter_id).first()
        if dead_letter is not None:
            dead_letter.status = DeadLetter.Status.FAILED_AGAIN
            dead_letter.status_changed_at = timezone.now()
            dead_letter.error_type, dead_letter.error = error_type, error
            dead_letter.last_failed_at = failed_at
            dead_letter.failures += 1
            dead_letter.attempts += attempts
            dead_letter.save(
                update_fields=[
                    "status", "status_changed_at", "error_type", "error", "last_failed_at", "failures", "attempts"
                ]
            )  # fmt: skip
            DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=error)
            return dead_letter
    dead_letter, created = DeadLetter.objects.get_or_create(
        consumer=consumer,
        stream=stream,
        stream_sequence=stream_sequence,
        defaults={
            "subject": subject,
            "message_id": message_id,
            "correlation_id": correlation_id,
            "data": data,
            "headers": headers,
            "error_type": error_type,
            "error": error,
            "attempts": attempts,
            "first_failed_at": failed_at,
            "last_failed_at": failed_at,
        },
    )
    if created:
        DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=error)
    return dead_letter


@transaction.atomic
def dead_letter_reprocess(*, dead_letter: DeadLetter, actor) -> DeadLetter:
    """Deliver the original message again to the one consumer that failed on it.

    It goes through the outbox to ``redeliver.<stream>.<consumer>``, a subject only that
    consumer's durable filters on; the runner marks the row resolved in the transaction
    that handles it, or the dead-letter consumer marks it failed again.
    """
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status in (DeadLetter.Status.RESOLVED, DeadLetter.Status.DISCARDED):
        raise DeadLetterStateError(f"dead letter {dead_letter.pk} is {dead_letter.status}; nothing to reprocess")
    attempt = dead_letter.history.filter(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).count() + 1
    original_headers = {
        key: value
        for key, value in dead_letter.headers.items()
        if key not in (H_MSG_ID, H_ORIGINAL_SUBJECT, H_DEAD_LETTER_ID, H_MESSAGE_ID)
    }
    outbox_write_raw(
        message_id=f"redeliver:{dead_letter.pk}:{attempt}",
        subject=f"{REDELIVER_PREFIX}.{dead_letter.stream}.{dead_letter.consumer}",
        aggregate_id=dead_letter.correlation_id or dead_letter.message_id or f"dead-letter:{dead_letter.pk}",
        body=dead_letter.data,
        headers={
            **original_headers,
            H_ORIGINAL_SUBJECT: dead_letter.subject,
            H_MESSAGE_ID: dead_letter.message_id or f"{dead_letter.stream}:{dead_letter.stream_sequence}",
            H_DEAD_LETTER_ID: str(dead_letter.pk),
        },
    )
    _set_status(dead_letter, DeadLetter.Status.REPROCESSING)
    DeadLetterEvent.objects.create(
        dead_letter=dead_letter, kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED, actor=actor, note=f"attempt {attempt}"
    )
    return dead_letter


@transaction.atomic
def dead_letter_discard(*, dead_letter: DeadLetter, actor, reason: str) -> DeadLetter:
    if not reason.strip():
        raise ValueError("a reason is required to discard a dead letter")
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status == DeadLetter.Status.RESOLVED:
        raise DeadLetterStateError(f"dead letter {dead_letter.pk} is resolved; nothing to discard")
    _set_status(dead_letter, DeadLetter.Status.DISCARDED)
    DeadLetterEvent.objects.create(
        dead_letter=dead_letter, kind=DeadLetterEvent.Kind.DISCARDED, actor=actor, note=reason.strip()
    )
    return dead_letter


def dead_letter_mark_resolved(*, dead_letter_id: int, note: str) -> None:
    """Call inside the transaction that handled the redelivered message."""
    dead_letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
    if dead_letter is None or dead_letter.status == DeadLetter.Status.RESOLVED:
        return
    _set_status(dead_letter, DeadLetter.Status.RESOLVED)
    DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.RESOLVED, note=note)


def _set_status(dead_letter: DeadLetter, status: str) -> None:
    dead_letter.status = status
    dead_letter.status_changed_at = timezone.now()
    dead_letter.save(update_fields=["status", "status_changed_at"])
