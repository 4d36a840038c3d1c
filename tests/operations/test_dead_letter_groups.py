"""Acting on a group of dead letters (one fingerprint) after its cause is fixed: a reprocess is one
bulk run over its open dead letters, named after the group; a discard closes them with the reason
and the group's fingerprint in each one's audit event, at most the bulk cap per call."""

from __future__ import annotations

import json

import pytest

from apps.eventbus.models import DeadLetter, OutboxEvent
from apps.operations import services
from apps.operations.dead_letter_groups import (
    DeadLetterGroupClosed,
    DeadLetterGroupNotFound,
    dead_letter_group_discard,
    dead_letter_group_reprocess,
)
from apps.operations.models import BulkReprocess
from apps.operations.services import BulkReprocessConflict
from tests.api.support import resolve
from tests.factories import make_dead_letter

pytestmark = pytest.mark.django_db


def incident(count: int = 3) -> list[DeadLetter]:
    return [make_dead_letter(error=f"order {n} refused: amount {n * 3}.50 over limit") for n in range(count)]


def events(subject: str) -> list[dict]:
    return [json.loads(e.body) for e in OutboxEvent.objects.filter(subject=subject).order_by("id")]


def test_reprocessing_a_group_starts_one_bulk_run_over_its_open_dead_letters(operator):
    rows = incident(4)
    resolve(rows[0])
    make_dead_letter(error="another cause")
    fingerprint = rows[1].fingerprint

    [run] = dead_letter_group_reprocess(fingerprint=fingerprint, actor=operator, rate=5)

    assert (run.consumer, run.total, run.rate, run.status, run.created_by) == ("testing", 3, 5, "queued", operator)
    assert set(run.items.values_list("dead_letter_id", flat=True)) == {row.pk for row in rows[1:]}
    title = "PermanentError: order <n> refused: amount <n> over limit"
    assert run.description == f"dead-letter group {fingerprint}: {title}"
    [started] = events("operator.bulk_reprocess_started.v1")
    assert (started["run_id"], started["actor"], started["description"]) == (run.pk, "olivia", run.description)

    with pytest.raises(BulkReprocessConflict, match="testing"):
        dead_letter_group_reprocess(fingerprint=fingerprint, actor=operator)
    assert BulkReprocess.objects.count() == 1


def test_a_group_with_nothing_open_or_no_such_group_is_refused(operator):
    [row] = incident(1)
    resolve(row)
    with pytest.raises(DeadLetterGroupClosed, match="no open dead letter"):
        dead_letter_group_reprocess(fingerprint=row.fingerprint, actor=operator)
    with pytest.raises(DeadLetterGroupClosed):
        dead_letter_group_discard(fingerprint=row.fingerprint, actor=operator, reason="noise")
    for unknown in ["0" * 64, "nope"]:
        with pytest.raises(DeadLetterGroupNotFound):
            dead_letter_group_reprocess(fingerprint=unknown, actor=operator)
    assert not BulkReprocess.objects.exists()


def test_discarding_a_group_closes_its_open_dead_letters_each_audited_with_the_group(operator, monkeypatch):
    rows = incident(3)
    resolve(rows[0])
    other = make_dead_letter(error="another cause")
    fingerprint = rows[0].fingerprint

    with pytest.raises(ValueError, match="reason"):
        dead_letter_group_discard(fingerprint=fingerprint, actor=operator, reason="  ")
    done = dead_letter_group_discard(fingerprint=fingerprint, actor=operator, reason="test orders")

    assert (done.discarded, done.remaining) == (2, 0)
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert [statuses[row.pk] for row in rows] == ["resolved", "discarded", "discarded"]
    assert statuses[other.pk] == "pending"
    discarded = events("operator.dead_letter_discarded.v1")
    assert sorted(e["dead_letter_id"] for e in discarded) == [rows[1].pk, rows[2].pk]
    reason = f"test orders (dead-letter group {fingerprint})"
    assert {(e["actor"], e["reason"]) for e in discarded} == {("olivia", reason)}


def test_a_group_larger_than_the_bulk_cap_is_discarded_the_oldest_first_and_says_what_remains(operator, monkeypatch):
    monkeypatch.setattr(services, "MAX_BULK_DISCARD", 2)
    rows = incident(3)

    first = dead_letter_group_discard(fingerprint=rows[0].fingerprint, actor=operator, reason="noise")
    assert (first.discarded, first.remaining) == (2, 1)
    assert DeadLetter.objects.get(pk=rows[2].pk).status == "pending"
    second = dead_letter_group_discard(fingerprint=rows[0].fingerprint, actor=operator, reason="noise")
    assert (second.discarded, second.remaining) == (1, 0)
