"""Dead letters (recording, reprocessing, editing, discarding, resolving): the only code
that changes them. Every operator action, and the outcome of a
reprocess, is also an ``operator.*`` event, so the audit log records it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone
from pydantic import ValidationError

from apps.eventbus import headers
from apps.eventbus.bounds import body_text, clean_headers, clean_text, copyable_headers
from apps.eventbus.consuming.delivery import correlation_id_of
from apps.eventbus.contracts import ContractError, decode
from apps.eventbus.deadletters.codec import MAX_TRACEBACK, Redelivery
from apps.eventbus.deadletters.fingerprint import fingerprint_of
from apps.eventbus.events import (
    DeadLetterDiscarded,
    DeadLetterEdited,
    DeadLetterFailedAgain,
    DeadLetterReprocessRequested,
    DeadLetterResolved,
    actor_fields,
)
from apps.eventbus.models import DeadLetter, DeadLetterBody, DeadLetterEvent
from apps.eventbus.producing.outbox import outbox_write, outbox_write_raw
from apps.eventbus.registry import REDELIVER_PREFIX, registry
from apps.eventbus.wire import unpublishable

logger = logging.getLogger(__name__)

# Open dead letters: the ones an operator may still reprocess, edit or discard.
REPROCESSABLE = (DeadLetter.Status.PENDING, DeadLetter.Status.REPROCESSING, DeadLetter.Status.FAILED_AGAIN)
MAX_STORED_ERROR = 10_000
MAX_COUNTER = 2**31 - 1  # a PositiveIntegerField
MAX_SEQUENCE = 2**63 - 1  # a BigIntegerField
# An operator event carries at most this much of a payload (UTF-8 bytes); the whole one stays on the row.
MAX_EVENT_PAYLOAD = 64 * 1024


class DeadLetterStateError(Exception):
    """The requested action does not apply to the dead letter's current status."""


class DeadLetterUnpublishable(DeadLetterStateError):
    """Reprocessing the dead letter as it is would write an event that can never be published:
    no stream captures its redelivery subject (or no declared consumer reads it there), it
    would exceed the server's max payload, or its body is bytes the outbox (text) cannot carry.
    Refused before anything is written. A :class:`DeadLetterStateError`, so callers that
    refuse a closed dead letter refuse this one too (the API: 409)."""


class DeadLetterEditError(ValueError):
    """An edited payload does not satisfy the contract of the message's subject."""


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


def _limit(name: str) -> int:
    return DeadLetter._meta.get_field(name).max_length


def _line(value, field: str) -> str:
    """A one-line value cut to its column (NUL and line breaks escaped)."""
    return clean_text(value, _limit(field), single_line=True)


def _counter(value) -> int:
    try:
        return min(max(int(value), 0), MAX_COUNTER)
    except (TypeError, ValueError):
        return 0


def _body_bytes(data: str | bytes) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    try:
        return data.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return data.encode("utf-8", "surrogatepass")


def _grouping(consumer: str, subject: str, error_type: str, error: str, traceback: str) -> dict:
    """The columns that group a dead letter with others that failed the same way, computed from
    the values as stored (so a backfill of the row computes the same)."""
    found = fingerprint_of(consumer=consumer, subject=subject, error_type=error_type, error=error, traceback=traceback)
    return {"fingerprint": found.value, "error_signature": found.signature, "error_frame": found.frame}


def dead_letter_identity(*, consumer: str, stream: str, stream_sequence: int) -> dict:
    """What identifies a dead letter (one consumer, one stream message), as stored."""
    return {
        "consumer": _line(consumer, "consumer"),
        "stream": _line(stream, "stream"),
        "stream_sequence": min(max(int(stream_sequence), 0), MAX_SEQUENCE),
    }


def dead_letter_record(
    *,
    consumer: str,
    stream: str,
    subject: str,
    stream_sequence: int,
    message_id: str,
    correlation_id: str,
    data: str | bytes,
    headers: dict[str, str],
    error_type: str,
    error: str,
    attempts: int,
    failed_at: datetime,
    traceback: str = "",
    reprocessed_dead_letter_id: int | None = None,
    body_parked: bool = False,
) -> DeadLetter:
    """Record one failure. A message that failed again after a reprocess updates its first row.

    Never fails on the failure it records: every value is bounded first (ids, subject and
    error type cut to their columns, NUL escaped, headers flattened and bounded, a body that
    text cannot hold shown escaped in ``data`` with its exact bytes in ``raw_data``); if the
    insert still raises a DataError or IntegrityError, a minimal row says so, with the body.
    ``body_parked``: the body is the one the runner kept in DeadLetterBody (moved here).
    """
    identity = dead_letter_identity(consumer=consumer, stream=stream, stream_sequence=stream_sequence)
    with transaction.atomic():
        parked = _take_parked_body(identity) if body_parked else None
        body = _body_bytes(parked if parked is not None else data)
        if parked is not None and not correlation_id:
            correlation_id = correlation_id_of(body)  # the dead letter travelled without its body
        text, faithful = body_text(body)
        error = clean_text(error, MAX_STORED_ERROR)
        note = error
        if body_parked:
            note += (
                f"\n(the body, {len(body)} bytes, could not travel again with its dead-letter headers: the runner "
                "kept it in the database)"
                if parked is not None
                else "\n(the dead letter announced a body kept in the database, but none was found)"
            )
        values = {
            "subject": _line(subject, "subject"),
            "message_id": _line(message_id, "message_id"),
            "correlation_id": _line(correlation_id, "correlation_id"),
            "data": text,
            "raw_data": None if faithful else body,
            "size": min(len(body), MAX_COUNTER),
            "headers": clean_headers(headers),
            "error_type": _line(error_type, "error_type") or "Unknown",
            "error": error,
            "traceback": clean_text(traceback, MAX_TRACEBACK),
            "attempts": _counter(attempts),
        }
        values.update(
            _grouping(
                identity["consumer"], values["subject"], values["error_type"], values["error"], values["traceback"]
            )
        )
        failed_at = failed_at if timezone.is_aware(failed_at) else timezone.make_aware(failed_at, UTC)
        try:
            with transaction.atomic():
                return _record(identity, values, failed_at, note, reprocessed_dead_letter_id)
        except (DataError, IntegrityError) as exc:
            logger.error(
                "dead letter %s %s #%s could not be recorded as received; recording a minimal row: %s",
                identity["consumer"], identity["stream"], identity["stream_sequence"], clean_text(exc, 500),
            )  # fmt: skip
            return _record_minimal(identity, values, exc)


def _record(identity: dict, values: dict, failed_at: datetime, note: str, reprocessed_id: int | None) -> DeadLetter:
    if reprocessed_id is not None:
        dead_letter = DeadLetter.objects.select_for_update().filter(pk=reprocessed_id).first()
        if dead_letter is not None:
            dead_letter.status = DeadLetter.Status.FAILED_AGAIN
            dead_letter.status_changed_at = timezone.now()
            dead_letter.error_type, dead_letter.error = values["error_type"], values["error"]
            dead_letter.traceback = values["traceback"]
            for name in ("fingerprint", "error_signature", "error_frame"):  # its group is its latest failure's
                setattr(dead_letter, name, values[name])
            dead_letter.last_failed_at = failed_at
            dead_letter.failures = min(dead_letter.failures + 1, MAX_COUNTER)
            dead_letter.attempts = min(dead_letter.attempts + values["attempts"], MAX_COUNTER)
            dead_letter.save(
                update_fields=[
                    "status", "status_changed_at", "error_type", "error", "traceback", "fingerprint", "error_signature",
                    "error_frame", "last_failed_at", "failures", "attempts",
                ]
            )  # fmt: skip
            DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=note)
            outbox_write(
                DeadLetterFailedAgain(
                    **_about(dead_letter), error_type=values["error_type"], error=values["error"][:2000]
                )
            )
            return dead_letter
    dead_letter, created = DeadLetter.objects.get_or_create(
        **identity, defaults={**values, "first_failed_at": failed_at, "last_failed_at": failed_at}
    )
    if created:
        DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=note)
    return dead_letter


def _record_minimal(identity: dict, values: dict, exc: Exception) -> DeadLetter:
    """The row of a dead letter whose details could not be stored: where it failed, why it
    could not be recorded, and its body (bytes can hold anything)."""
    error = (
        f"this dead letter could not be recorded as received ({type(exc).__name__}: {clean_text(exc, 1000)}); "
        f"its error was {clean_text(values['error_type'], 200)}: {clean_text(values['error'], 2000)}"
    )
    now = timezone.now()
    subject = clean_text(values["subject"].encode("ascii", "backslashreplace").decode(), 200)
    with transaction.atomic():
        dead_letter, created = DeadLetter.objects.get_or_create(
            **identity,
            defaults={
                "subject": subject,
                "data": "",
                "raw_data": _body_bytes(values["raw_data"] if values["raw_data"] is not None else values["data"]),
                "size": values["size"],
                "headers": {},
                "error_type": "UnrecordableDeadLetter",
                "error": error,
                **_grouping(identity["consumer"], subject, "UnrecordableDeadLetter", error, ""),
                "attempts": values["attempts"],
                "first_failed_at": now,
                "last_failed_at": now,
            },
        )
        if created:
            DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.FAILED, note=error)
    return dead_letter


def _take_parked_body(identity: dict) -> bytes | None:
    """The body the runner kept for this dead letter, removed from DeadLetterBody (it moves to the row)."""
    parked = DeadLetterBody.objects.select_for_update().filter(**identity).first()
    if parked is None:
        return None
    parked.delete()
    return bytes(parked.body)


def dead_letter_park_body(*, consumer: str, stream: str, stream_sequence: int, body: bytes) -> bool:
    """Keep a dead letter's body that cannot travel again with its dead-letter headers (the
    runner, in its database thread, before it publishes the dead letter without the body).

    Idempotent (the runner and the MAX_DELIVERIES advisory may both report one dead letter);
    nothing is kept for a dead letter already recorded. True when a body is kept. A database
    outage raises: the message is not settled and comes back, nothing is lost (the runner's
    next batch on this thread finds the outage and reopens the connection).
    """
    identity = dead_letter_identity(consumer=consumer, stream=stream, stream_sequence=stream_sequence)
    if DeadLetter.objects.filter(**identity).exists():
        return False
    DeadLetterBody.objects.bulk_create([DeadLetterBody(**identity, body=bytes(body))], ignore_conflicts=True)
    return True


def _redelivery_subject(dead_letter: DeadLetter) -> str:
    return f"{REDELIVER_PREFIX}.{dead_letter.stream}.{dead_letter.consumer}"


def _route_refusal(dead_letter: DeadLetter) -> str | None:
    """Why no stream or no consumer would take this dead letter's redelivery, if so."""
    subject = _redelivery_subject(dead_letter)
    if not registry.captures(subject):
        return (
            f"its redelivery subject {subject!r} is captured by no stream (stream {dead_letter.stream!r} takes no "
            "redeliveries or is not declared), so it could never be published; discard it instead"
        )
    spec = registry.consumers.get(dead_letter.consumer)
    try:
        filters = registry.streams_of(spec) if spec is not None else {}
    except KeyError:
        filters = {}
    if subject not in filters.get(dead_letter.stream, ()):
        return (
            f"no declared consumer named {dead_letter.consumer!r} reads {subject!r}, so nothing would ever handle "
            "the redelivery; discard it instead"
        )
    return None


def _redelivery(dead_letter: DeadLetter, attempt: int, body: str | None = None) -> tuple[dict, list[str]]:
    """The outbox row that redelivers the dead letter (``body`` instead of its payload), and
    the original headers left out of it (control headers, unsafe or beyond the bounds)."""
    copied, dropped = copyable_headers(dead_letter.headers)
    row = {
        "message_id": f"redeliver:{dead_letter.pk}:{attempt}",
        "subject": _redelivery_subject(dead_letter),
        "aggregate_id": dead_letter.correlation_id or dead_letter.message_id or f"dead-letter:{dead_letter.pk}",
        "body": body if body is not None else (dead_letter.edited_data or dead_letter.data),
        "headers": {
            **copied,
            **Redelivery(
                original_subject=dead_letter.subject,
                ledger_key=dead_letter.message_id or f"{dead_letter.stream}:{dead_letter.stream_sequence}",
                dead_letter_id=dead_letter.pk,
            ).encode(),
        },
    }
    return row, dropped


def _publish_refusal(dead_letter: DeadLetter, row: dict, *, edited: bool) -> str | None:
    """Why the redelivery ``row`` could never be published, if so."""
    if route := _route_refusal(dead_letter):
        return route
    if not edited and dead_letter.raw_data is not None:
        return (
            "its body is not UTF-8 text (or holds NUL characters), which the outbox cannot carry as it is; edit the "
            "payload (it is delivered instead) or discard it"
        )
    body = row["body"].encode("utf-8", "surrogatepass")
    written = {**row["headers"], headers.NATS_MSG_ID: row["message_id"]}  # the relay adds the de-duplication id
    if problem := unpublishable(written, body, max_payload=settings.EVENTBUS["MAX_PAYLOAD"]):
        what = "edited payload" if edited else "payload"
        return (
            f"its redelivery (a {len(body)}-byte {what} and its headers) could not be published: {problem}; "
            "edit the payload to make it smaller, or discard it"
        )
    return None


def reprocess_refusal(dead_letter: DeadLetter, *, route_only: bool = False) -> str | None:
    """Why reprocessing this dead letter as it is now would be refused (see
    :class:`DeadLetterUnpublishable`), or None. For pages that offer the action.
    ``route_only``: only whether a stream and a consumer would take its redelivery (no edit
    can change that; it reads no payload)."""
    if route_only:
        return _route_refusal(dead_letter)
    row, _ = _redelivery(dead_letter, attempt=1)
    return _publish_refusal(dead_letter, row, edited=bool(dead_letter.edited_data))


@transaction.atomic
def dead_letter_reprocess(*, dead_letter: DeadLetter, actor, bulk_run_id: int | None = None) -> DeadLetter:
    """Deliver the message again (its edited payload, if an operator corrected it) to the one
    consumer that failed on it.

    It goes through the outbox to ``redeliver.<stream>.<consumer>``, a subject only that
    consumer's durable filters on; the runner marks the row resolved in the transaction
    that handles it, or the dead-letter consumer marks it failed again. The original headers
    are copied except control headers (``Nats-*``, ``Eventbus-*``) and unsafe or
    out-of-bounds ones. Raises :class:`DeadLetterStateError` for a resolved or discarded
    dead letter, :class:`DeadLetterUnpublishable` when the redelivery could never be
    published (nothing is written then).
    """
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status not in REPROCESSABLE:
        raise DeadLetterStateError(f"dead letter {dead_letter.pk} is {dead_letter.status}; nothing to reprocess")
    attempt = dead_letter.history.filter(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).count() + 1
    row, dropped = _redelivery(dead_letter, attempt)
    if refusal := _publish_refusal(dead_letter, row, edited=bool(dead_letter.edited_data)):
        raise DeadLetterUnpublishable(f"dead letter {dead_letter.pk} cannot be reprocessed: {refusal}")
    outbox_write_raw(**row)
    _set_status(dead_letter, DeadLetter.Status.REPROCESSING)
    note = f"attempt {attempt}" + (" (edited payload)" if dead_letter.edited_data else "")
    if bulk_run_id is not None:
        note += f", bulk run {bulk_run_id}"
    notable = [name for name in dropped if name.lower() != headers.NATS_MSG_ID.lower()]  # the one every message has
    if notable:
        note += f"; original headers not copied: {', '.join(notable[:20])}" + (" ..." if len(notable) > 20 else "")
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


def _event_text(text: str, dead_letter: DeadLetter) -> str:
    """A payload as an operator event carries it: whole up to MAX_EVENT_PAYLOAD bytes, else cut
    with a marker (the event must stay publishable; the row keeps the whole payload)."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_EVENT_PAYLOAD:
        return text
    head = encoded[:MAX_EVENT_PAYLOAD].decode("utf-8", "ignore")
    return f"{head}[... cut: {len(encoded)} bytes in all; the whole payload is on dead letter {dead_letter.pk}]"


@transaction.atomic
def dead_letter_edit_and_reprocess(*, dead_letter: DeadLetter, actor, data: str) -> DeadLetter:
    """Replace the payload to deliver with ``data`` and reprocess. The original body stays in
    ``data``; every edit is in the history. Raises :class:`DeadLetterEditError` with the
    contract's complaint when ``data`` does not satisfy the subject's contract,
    :class:`DeadLetterUnpublishable` when no stream or consumer would take the redelivery or
    it would be too large (nothing is saved then)."""
    dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
    if dead_letter.status not in REPROCESSABLE:
        raise DeadLetterStateError(f"dead letter {dead_letter.pk} is {dead_letter.status}; nothing to reprocess")
    if refusal := _route_refusal(dead_letter):
        raise DeadLetterUnpublishable(f"dead letter {dead_letter.pk} cannot be reprocessed: {refusal}")
    try:
        decode(dead_letter.subject, data.encode())
    except (ContractError, ValidationError, ValueError) as exc:
        raise DeadLetterEditError(str(exc)) from None
    attempt = dead_letter.history.filter(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).count() + 1
    row, _ = _redelivery(dead_letter, attempt, body=data)
    if refusal := _publish_refusal(dead_letter, row, edited=True):
        raise DeadLetterUnpublishable(f"dead letter {dead_letter.pk} cannot be reprocessed: {refusal}")
    dead_letter.edited_data = data
    dead_letter.save(update_fields=["edited_data"])
    DeadLetterEvent.objects.create(dead_letter=dead_letter, kind=DeadLetterEvent.Kind.EDITED, actor=actor, note=data)
    outbox_write(
        DeadLetterEdited(
            **_about(dead_letter),
            **actor_fields(actor),
            original_data=_event_text(dead_letter.data, dead_letter),
            edited_data=_event_text(data, dead_letter),
        )
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
