"""Acting on a whole group of dead letters (one fingerprint: the same failure) once its cause is
fixed: reprocess its open ones as a rate-limited bulk run, or discard them with a reason. Both go
through the bulk services (``services.py``), so each is recorded in the audit log as any bulk
action is, with the group's fingerprint in the run's description or the discard's reason."""

from __future__ import annotations

from dataclasses import dataclass

from apps.eventbus.deadletters.selectors import DeadLetterGroup, dead_letter_group_get, dead_letter_group_members
from apps.eventbus.deadletters.services import REPROCESSABLE

from . import services
from .models import BulkReprocess
from .services import bulk_discard, bulk_reprocess_start


class DeadLetterGroupNotFound(LookupError):
    """No dead letter has this fingerprint (or it is not one)."""


class DeadLetterGroupClosed(ValueError):
    """The group has no open dead letter: nothing to reprocess or discard."""


@dataclass(frozen=True)
class GroupDiscarded:
    discarded: int
    remaining: int  # still open: past MAX_BULK_DISCARD, or arrived meanwhile


def group_description(group: DeadLetterGroup) -> str:
    """How a run names its group: the whole fingerprint first (a bulk run's description holds 300 characters)."""
    return f"dead-letter group {group.fingerprint}: {group.error_type}: {group.signature}"[:300]


def dead_letter_group_reprocess(*, fingerprint: str, actor, rate: float | None = None) -> list[BulkReprocess]:
    """Start a bulk run over the group's open dead letters (one consumer: it is part of the
    fingerprint). Raises :class:`DeadLetterGroupNotFound`, :class:`DeadLetterGroupClosed`, and
    what ``bulk_reprocess_start`` raises (a run already active for the consumer, a bad rate)."""
    group = _group(fingerprint)
    return bulk_reprocess_start(
        dead_letters=dead_letter_group_members(fingerprint=fingerprint),
        actor=actor,
        rate=rate,
        description=group_description(group),
    )


def dead_letter_group_discard(*, fingerprint: str, actor, reason: str) -> GroupDiscarded:
    """Discard the group's open dead letters, the oldest first and at most ``MAX_BULK_DISCARD``
    in one call (each through ``dead_letter_discard``: its own transaction and audit event, the
    reason followed by the group's fingerprint); ``remaining`` says how many are still open.
    Raises ``ValueError`` without a reason, :class:`DeadLetterGroupNotFound`,
    :class:`DeadLetterGroupClosed`."""
    if not reason.strip():
        raise ValueError("a reason is required to discard a group of dead letters")
    _group(fingerprint)
    members = dead_letter_group_members(fingerprint=fingerprint)
    open_ = members.filter(status__in=REPROCESSABLE)
    first = list(open_.order_by("pk").values_list("pk", flat=True)[: services.MAX_BULK_DISCARD])
    discarded = bulk_discard(
        dead_letters=members.filter(pk__in=first),
        actor=actor,
        reason=f"{reason.strip()} (dead-letter group {fingerprint})",
    )
    return GroupDiscarded(discarded, open_.count())


def _group(fingerprint: str) -> DeadLetterGroup:
    group = dead_letter_group_get(fingerprint=fingerprint)
    if group is None:
        raise DeadLetterGroupNotFound(f"no dead letter has the fingerprint {fingerprint[:64]!r}")
    if not group.open:
        raise DeadLetterGroupClosed(
            f"dead-letter group {fingerprint} has no open dead letter (all {group.total} resolved or discarded)"
        )
    return group
