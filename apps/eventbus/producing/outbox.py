"""Writing events: the one door from a service to the event stream."""

from __future__ import annotations

import json

from django.db import connection, transaction
from django.utils import timezone

from apps.eventbus.contracts import Event, validate
from apps.eventbus.events import OutboxEventDiscarded, OutboxEventRequeued, actor_fields
from apps.eventbus.models import OutboxDeadLetter, OutboxEvent
from apps.eventbus.tracing import current_context_headers, headers_for

NOTIFY_CHANNEL = "eventbus_outbox"
CONTENT_TYPE = "application/json"


class TransactionRequired(RuntimeError):
    """Events must be written in the transaction of the change they report."""


def outbox_write(
    event: Event, *, aggregate_id: str | None = None, headers: dict[str, str] | None = None
) -> OutboxEvent:
    """Validate ``event`` and write it to the outbox.

    Call inside the ``transaction.atomic()`` block that makes the change the event reports:
    both commit or neither does. The relay publishes it after commit, in order with the
    other events of ``aggregate_id`` (default: the correlation id, else the message id).
    The row keeps the trace context (``traceparent``) of the span in hand: in a consumer, the
    span of the message the event answers (``tracing.headers_for``).
    """
    event = validate(event)
    trace = headers_for(event.causation_id, event.correlation_id, current_context_headers())
    return _insert(_row(event, trace, aggregate_id=aggregate_id, headers=headers))


def outbox_write_many(events: list[Event]) -> list[OutboxEvent]:
    """``outbox_write`` for several events at once: one INSERT and one relay wake-up.

    Same transaction rule; each event's aggregate is its correlation id (else its message
    id), and events of one aggregate keep their order in the list.
    """
    if not transaction.get_connection().in_atomic_block:
        raise TransactionRequired("write events inside the transaction.atomic() block of their change")
    if not events:
        return []
    current = current_context_headers()  # each event continues the trace of the message it answers, if in hand
    rows = OutboxEvent.objects.bulk_create(
        [_row(event, headers_for(event.causation_id, event.correlation_id, current)) for event in map(validate, events)]
    )
    notify_relay()
    return rows


def _row(event: Event, trace: dict[str, str], *, aggregate_id: str | None = None, headers=None) -> OutboxEvent:
    """The outbox row of a validated event, unsaved."""
    return OutboxEvent(
        message_id=event.message_id,
        subject=event.subject,
        aggregate_id=aggregate_id or event.correlation_id or event.message_id,
        body=event.to_json().decode(),
        headers={
            **wire_headers(event.subject),
            "Event-Version": str(event.contract_version()),
            **trace,
            **(headers or {}),
        },
    )


def outbox_write_raw(
    *, message_id: str, subject: str, aggregate_id: str, body: str, headers: dict[str, str]
) -> OutboxEvent:
    """Write an already-encoded message (``outbox_write`` after validation; a reprocessed dead
    letter as it was received). Same transaction rule."""
    return _insert(
        OutboxEvent(message_id=message_id, subject=subject, aggregate_id=aggregate_id, body=body, headers=headers)
    )


def _insert(row: OutboxEvent) -> OutboxEvent:
    """Save the row and wake the relays, in one round trip, inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise TransactionRequired(f"write {row.subject} inside the transaction.atomic() block of its change")
    with connection.cursor() as cursor:
        values = [row.message_id, row.subject, row.aggregate_id, row.body, json.dumps(row.headers), NOTIFY_CHANNEL]
        cursor.execute(_INSERT_AND_NOTIFY, values)
        row.id, row.created_at = cursor.fetchone()
    row._state.adding, row._state.db = False, connection.alias
    return row


_INSERT_AND_NOTIFY = f"""
    WITH row AS (
        INSERT INTO {OutboxEvent._meta.db_table} (message_id, subject, aggregate_id, body, headers, created_at)
        VALUES (%s, %s, %s, %s, %s::jsonb, now())
        RETURNING id, created_at
    )
    SELECT row.id, row.created_at FROM row, pg_notify(%s, '')
"""


def wire_headers(subject: str) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, "Event-Type": subject.rsplit(".v", 1)[0]}


def notify_relay() -> None:
    """Wake the relays; PostgreSQL delivers the notification on commit, and not on rollback."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])


# -- events the relay set aside ---------------------------------------------------------


class OutboxDeadLetterStateError(Exception):
    """The event was already requeued or discarded."""


def _set_aside_event(dead: OutboxDeadLetter, actor) -> dict:

    return {
        "outbox_dead_letter_id": dead.pk,
        "subject_of_event": dead.subject,
        "event_message_id": dead.message_id,
        "aggregate_id": dead.aggregate_id,
        "refusal": dead.reason[:2000],
        "correlation_id": dead.aggregate_id,
        **actor_fields(actor),
    }


def _lock_refused(dead: OutboxDeadLetter) -> OutboxDeadLetter:
    dead = OutboxDeadLetter.objects.select_for_update().get(pk=dead.pk)
    if dead.status != OutboxDeadLetter.Status.REFUSED:
        raise OutboxDeadLetterStateError(f"event {dead.message_id} was already {dead.status}")
    return dead


def _close(dead: OutboxDeadLetter, status: str, note: str) -> None:
    dead.status, dead.note, dead.status_changed_at = status, note, timezone.now()
    dead.save(update_fields=["status", "note", "status_changed_at"])


@transaction.atomic
def outbox_dead_letter_requeue(*, dead: OutboxDeadLetter, actor) -> OutboxEvent:
    """Put a copy of a set-aside event back in the outbox, after its cause was fixed (its stream
    now exists, the server's limit was raised): published at the end of the line, with its own
    message id (JetStream drops it if it did get through after all)."""
    dead = _lock_refused(dead)
    row = outbox_write_raw(
        message_id=dead.message_id,
        subject=dead.subject,
        aggregate_id=dead.aggregate_id,
        body=dead.body,
        headers=dead.headers,
    )
    _close(dead, OutboxDeadLetter.Status.REQUEUED, f"requeued by {getattr(actor, 'username', '') or 'the platform'}")
    outbox_write(OutboxEventRequeued(**_set_aside_event(dead, actor)))
    return row


@transaction.atomic
def outbox_dead_letter_discard(*, dead: OutboxDeadLetter, actor, reason: str) -> None:
    """Give up on a set-aside event, for a stated reason (kept, with who did it)."""
    if not reason.strip():
        raise ValueError("a reason is required to discard an event")
    dead = _lock_refused(dead)
    _close(dead, OutboxDeadLetter.Status.DISCARDED, reason.strip())
    outbox_write(OutboxEventDiscarded(**_set_aside_event(dead, actor), reason=reason.strip()))
