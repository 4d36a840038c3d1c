"""Contracts the event backbone publishes itself: what operators did to dead letters and
consumers, and what came of it. They land in the ``OPERATOR`` stream, which the audit log
consumes like any other, so every operator action is in the immutable audit trail. A dead
letter's events carry its correlation id, so they also show on the order's timeline."""

from __future__ import annotations

from pydantic import Field

from apps.eventbus.contracts import Event


class OperatorAction(Event):
    """Who acted (empty for the platform itself)."""

    actor: str = Field(default="", max_length=150)
    actor_id: int | None = None


class DeadLetterEventBase(OperatorAction):
    dead_letter_id: int
    consumer: str
    stream: str
    original_subject: str
    stream_sequence: int
    original_message_id: str = ""


class DeadLetterReprocessRequested(DeadLetterEventBase):
    subject = "operator.dead_letter_reprocess_requested.v1"
    attempt: int = Field(ge=1)
    edited: bool = False
    bulk_run_id: int | None = None


class DeadLetterEdited(DeadLetterEventBase):
    """The payload was corrected before reprocessing; both versions are kept."""

    subject = "operator.dead_letter_edited.v1"
    original_data: str
    edited_data: str


class DeadLetterDiscarded(DeadLetterEventBase):
    subject = "operator.dead_letter_discarded.v1"
    reason: str = Field(min_length=1)
    bulk_run_id: int | None = None


class DeadLetterResolved(DeadLetterEventBase):
    """The outcome of a reprocess: the consumer handled the message this time."""

    subject = "operator.dead_letter_resolved.v1"
    note: str = ""


class DeadLetterFailedAgain(DeadLetterEventBase):
    """The outcome of a reprocess: the consumer dead-lettered the message again."""

    subject = "operator.dead_letter_failed_again.v1"
    error_type: str
    error: str


class ConsumerPaused(OperatorAction):
    subject = "operator.consumer_paused.v1"
    consumer: str
    streams: tuple[str, ...]
    until: str = Field(description="RFC 3339 time the server resumes delivery by itself")


class ConsumerResumed(OperatorAction):
    subject = "operator.consumer_resumed.v1"
    consumer: str
    streams: tuple[str, ...]


class OutboxEventActionBase(OperatorAction):
    """An operator acted on an event the relay had set aside (JetStream could not accept it)."""

    outbox_dead_letter_id: int
    subject_of_event: str = Field(max_length=200)
    event_message_id: str = Field(max_length=100)
    aggregate_id: str = Field(max_length=100)
    refusal: str


class OutboxEventRequeued(OutboxEventActionBase):
    subject = "operator.outbox_event_requeued.v1"


class OutboxEventDiscarded(OutboxEventActionBase):
    subject = "operator.outbox_event_discarded.v1"
    reason: str = Field(min_length=1)


def actor_fields(actor) -> dict:
    """The ``actor``/``actor_id`` of an operator event: a user, or nobody (the platform)."""
    if actor is None or not getattr(actor, "pk", None):
        return {"actor": "", "actor_id": None}
    return {"actor": actor.get_username(), "actor_id": actor.pk}


# -- outbox <-> stream reconciliation (producing/reconciliation.py) ---------------------------

from datetime import datetime  # noqa: E402 - appended with the contracts below
from typing import Annotated  # noqa: E402

MAX_REPORTED_IDS = 50  # republished message ids one event names; the run's row keeps more


class OutboxReconciliationRequested(OperatorAction):
    """An operator asked for a reconciliation run now (the cockpit's "Run now")."""

    subject = "operator.outbox_reconciliation_requested.v1"
    run_id: int


class OutboxReconciled(OperatorAction):
    """A reconciliation run found sent events missing from their stream (or rows it could not
    check or republish). ``actor``: the operator who asked for the run, empty for the schedule."""

    subject = "operator.outbox_reconciled.v1"
    run_id: int
    window_start: datetime
    window_end: datetime
    checked: int = Field(ge=0)
    missing: int = Field(ge=0)
    republished: int = Field(ge=0)
    failed: int = Field(ge=0)
    republished_message_ids: tuple[Annotated[str, Field(max_length=100)], ...] = Field(
        default=(), max_length=MAX_REPORTED_IDS
    )
