"""Contracts of the cockpit's own actions: bulk reprocess runs. Like the backbone's operator
events (``apps/eventbus/events.py``) they are ``operator.*`` subjects in the ``OPERATOR``
stream, so the audit log records them; each dead letter a run reprocesses is recorded there
too (``operator.dead_letter_reprocess_requested.v1`` with the run's id)."""

from __future__ import annotations

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
