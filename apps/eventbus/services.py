"""Dead letters (recording, reprocessing, editing, discarding) and consumers (pausing,
resuming): the only code that changes them. Every operator action, and the outcome of a
reprocess, is also an ``operator.*`` event, so the audit log records it."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from . import monitoring
from .contracts import ContractError, decode
from .delivery import H_DEAD_LETTER_ID, H_MESSAGE_ID, H_MSG_ID, H_ORIGINAL_SUBJECT
from .events import (
    ConsumerPaused,
    ConsumerResumed,
    DeadLetterDiscarded,
    DeadLetterEdited,
    DeadLetterFailedAgain,
    DeadLetterReprocessRequested,
    DeadLetterResolved,
)
from .models import DeadLetter, DeadLetterEvent
from .outbox import outbox_write, outbox_write_raw
from .registry import REDELIVER_PREFIX

# Open dead letters: the ones an operator may still reprocess, edit or discard.
REPROCESSABLE = (DeadLetter.Status.PENDING, DeadLetter.Status.REPROCESSING, DeadLetter.Status.FAILED_AGAIN)


class DeadLetterStateError(Exception):
    """The requested action does not apply to the dead letter's current status."""


class DeadLetterEditError(ValueError):
    """An edited payload does not satisfy the contract of the message's subject."""


def actor_fields(actor) -> dict:
    """The ``actor``/``actor_id`` of an operator event: a user, or nobody (the platform)."""
    if actor is None or not getattr(actor, "pk", None):
        return {"actor": "", "actor_id": None}
    return {"actor": actor.get_username(), "actor_id": actor.pk}


def _about(dead_letter: DeadLetter) -> dict:
    return {
        "dead_letter_id": dead_letter.pk,
        "consumer": dead_letter.consumer,
        "stream": dead_letter.stream,
        "original_subject": dead_letter.subject,
        "stream_sequence": dead_letter.stream_sequence,
        "original_message_id": dead_letter.message_id,
        "correlation_id": dead_letter.correlation_id or None,
    }


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
    traceback: str = "",
    reprocessed_dead_letter_id: int | None = None,
) -> DeadLetter:
    """Record one failure. A message that failed again after a reprocess updates its first row."""
    if reprocessed_dead_letter_id is not None:
        dead_letter = DeadLetter.objects.select_for_update().filter(pk=reprocessed_dead_letter_id).first()
        if dead_letter is not None:
            dead_letter.status = DeadLetter.Status.FAILED_AGAIN
            dead_letter.status_changed_at = timezone.now()
            dead_letter.error_type, dead_letter.error, dead_letter.traceback = error_type, error, traceback
            dead_letter.last_failed_at = failed_at
            dead_letter.failures += 1
            dead_letter.attempts += attempts
            dead_letter.save(
                update_fields=[
                    "status", "status_changed_at", "error_type", "error", "traceback", "last_failed_at", "failures",
                    "attempts",
                ]
            )  # fmt: skip
            DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=error)
            outbox_write(DeadLetterFailedAgain(**_about(dead_letter), error_type=error_type, error=error[:2000]))
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
            "traceback": traceback,
            "attempts": attempts,
            "first_failed_at": failed_at,
            "last_failed_at": failed_at,
        },
    )
    if created:
        DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=error)
    return dead_letter


@transaction.atomic
def dead_letter_reprocess(*, dead_letter: DeadLetter, actor, bulk_run_id: int | None = None) -> DeadLetter:
    """Deliver the message again (its edited payload, if an operator corrected it) to the one
    consumer that failed on it.

    It goes through the outbox to ``redeliver.<stream>.<consumer>``, a subject only that
    consumer's durable filters on; the runner marks the row resolved in the transaction
    that handles it, or the dead-letter consumer marks it failed again. Raises
    :class:`DeadLetterStateError` for a resolved or discarded dead letter.
    """
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status not in REPROCESSABLE:
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
        body=dead_letter.edited_data or dead_letter.data,
        headers={
            **original_headers,
            H_ORIGINAL_SUBJECT: dead_letter.subject,
            H_MESSAGE_ID: dead_letter.message_id or f"{dead_letter.stream}:{dead_letter.stream_sequence}",
            H_DEAD_LETTER_ID: str(dead_letter.pk),
        },
    )
    _set_status(dead_letter, DeadLetter.Status.REPROCESSING)
    note = f"attempt {attempt}" + (" (edited payload)" if dead_letter.edited_data else "")
    if bulk_run_id is not None:
        note += f", bulk run {bulk_run_id}"
    DeadLetterEvent.objects.create(
        dead_letter=dead_letter, kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED, actor=actor, note=note
    )
    outbox_write(
        DeadLetterReprocessRequested(
            **_about(dead_letter),
            **actor_fields(actor),
            attempt=attempt,
            edited=bool(dead_letter.edited_data),
            bulk_run_id=bulk_run_id,
        )
    )
    return dead_letter


@transaction.atomic
def dead_letter_edit_and_reprocess(*, dead_letter: DeadLetter, actor, data: str) -> DeadLetter:
    """Replace the payload to deliver with ``data`` and reprocess. The original body stays in
    ``data``; every edit is in the history. Raises :class:`DeadLetterEditError` with the
    contract's complaint when ``data`` does not satisfy the subject's contract."""
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status not in REPROCESSABLE:
        raise DeadLetterStateError(f"dead letter {dead_letter.pk} is {dead_letter.status}; nothing to reprocess")
    try:
        decode(dead_letter.subject, data.encode())
    except (ContractError, ValidationError, ValueError) as exc:
        raise DeadLetterEditError(str(exc)) from None
    dead_letter.edited_data = data
    dead_letter.save(update_fields=["edited_data"])
    DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.EDITED, actor=actor, note=data)
    outbox_write(
        DeadLetterEdited(**_about(dead_letter), **actor_fields(actor), original_data=dead_letter.data, edited_data=data)
    )
    return dead_letter_reprocess(dead_letter=dead_letter, actor=actor)


@transaction.atomic
def dead_letter_discard(*, dead_letter: DeadLetter, actor, reason: str, bulk_run_id: int | None = None) -> DeadLetter:
    """Give up on the message, for a stated reason. Raises :class:`DeadLetterStateError` for a
    resolved or already discarded dead letter, ``ValueError`` without a reason."""
    if not reason.strip():
        raise ValueError("a reason is required to discard a dead letter")
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status not in REPROCESSABLE:
        raise DeadLetterStateError(f"dead letter {dead_letter.pk} is {dead_letter.status}; nothing to discard")
    _set_status(dead_letter, DeadLetter.Status.DISCARDED)
    DeadLetterEvent.objects.create(
        dead_letter=dead_letter, kind=DeadLetterEvent.Kind.DISCARDED, actor=actor, note=reason.strip()
    )
    outbox_write(
        DeadLetterDiscarded(
            **_about(dead_letter), **actor_fields(actor), reason=reason.strip(), bulk_run_id=bulk_run_id
        )
    )
    return dead_letter


def dead_letter_mark_resolved(*, dead_letter_id: int, note: str) -> None:
    """Call inside the transaction that handled the redelivered message."""
    dead_letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
    if dead_letter is None or dead_letter.status == DeadLetter.Status.RESOLVED:
        return
    _set_status(dead_letter, DeadLetter.Status.RESOLVED)
    DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.RESOLVED, note=note)
    outbox_write(DeadLetterResolved(**_about(dead_letter), note=note))


def _set_status(dead_letter: DeadLetter, status: str) -> None:
    dead_letter.status = status
    dead_letter.status_changed_at = timezone.now()
    dead_letter.save(update_fields=["status", "status_changed_at"])


def consumer_pause(*, name: str, actor, until: datetime | None = None) -> datetime:
    """Pause a consumer on the server (every stream it reads) until ``until`` (default: until
    resumed), then record who did it. The server state changes first: if recording fails the
    caller sees the error with the consumer already paused. Raises ``KeyError`` for an
    undeclared consumer, :class:`apps.eventbus.monitoring.NatsUnreachable`."""
    streams, until = monitoring.pause(name, until)
    with transaction.atomic():
        outbox_write(
            ConsumerPaused(
                consumer=name,
                streams=tuple(streams),
                until=until.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                **actor_fields(actor),
            )
        )
    return until


def consumer_resume(*, name: str, actor) -> None:
    """Resume a paused consumer now, then record who did it (see :func:`consumer_pause`)."""
    streams = monitoring.resume(name)
    with transaction.atomic():
        outbox_write(ConsumerResumed(consumer=name, streams=tuple(streams), **actor_fields(actor)))
