"""Contracts of the cockpit's own actions: bulk reprocess runs and replays. Like the backbone's operator
events (``apps/eventbus/events.py``) they are ``operator.*`` subjects in the ``OPERATOR``
stream, so the audit log records them; each dead letter a run reprocesses is recorded there
too (``operator.dead_letter_reprocess_requested.v1`` with the run's id)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from apps.eventbus.events import OperatorAction


class BulkReprocessEvent(OperatorAction):
    run_id: int
    consumer: str
    total: int = Field(ge=0)


class BulkReprocessStarted(BulkReprocessEvent):
    subject = "operator.bulk_reprocess_started.v1"
    rate: float = Field(gt=0)
    description: str = ""


class BulkReprocessEnded(BulkReprocessEvent):
    """How far the run got."""

    reprocessed: int
    skipped: int


class BulkReprocessCancelled(BulkReprocessEnded):
    subject = "operator.bulk_reprocess_cancelled.v1"


class BulkReprocessCompleted(BulkReprocessEnded):
    subject = "operator.bulk_reprocess_completed.v1"


class ReplayEvent(OperatorAction):
    """A replay of ``stream`` through ``consumer``'s handlers (``ReplayRun``)."""

    run_id: int
    consumer: str = Field(max_length=100)
    stream: str = Field(max_length=100)


class ReplayStarted(ReplayEvent):
    """Queued; it starts at ``from_seq``, at ``since``, or (neither) at the stream's first message."""

    subject = "operator.replay_started.v1"
    from_seq: int | None = Field(default=None, ge=1)
    since: datetime | None = None
    batch_size: int = Field(ge=1)


class ReplayEnded(ReplayEvent):
    """How far the run got: the last sequence replayed, the last it was to reach, and how many
    messages came to each verdict (``handled``, ``duplicate``, ``retried``, ``dead_lettered``...)."""

    position: int = Field(ge=0)
    last_seq: int = Field(ge=0)
    counts: dict[str, int] = Field(default_factory=dict)


class ReplayCancelled(ReplayEnded):
    """By ``actor``; the batch in hand when it was cancelled is still replayed."""

    subject = "operator.replay_cancelled.v1"


class ReplayCompleted(ReplayEnded):
    subject = "operator.replay_completed.v1"


class ReplayFailed(ReplayEnded):
    """The replay could not go on (NATS unreachable, the stream missing...)."""

    subject = "operator.replay_failed.v1"
    error: str = Field(max_length=1000)
