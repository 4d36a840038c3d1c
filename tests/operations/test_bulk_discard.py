"""Bulk discard (the admin's "Discard the selected dead letters"): the open dead letters of a
selection, each discarded and audited on its own; closed ones left alone; too many refused whole."""

from __future__ import annotations

import json

import pytest

from apps.eventbus.deadletters.services import dead_letter_mark_resolved
from apps.eventbus.models import DeadLetter, OutboxEvent
from apps.operations import services
from apps.operations.services import BulkDiscardError, bulk_discard
from tests.factories import make_dead_letter

pytestmark = pytest.mark.django_db


def test_the_open_dead_letters_are_discarded_each_with_its_audit_event(operator):
    first, second, resolved = make_dead_letter(), make_dead_letter(), make_dead_letter()
    dead_letter_mark_resolved(dead_letter_id=resolved.pk, note="handled")
    OutboxEvent.objects.all().delete()

    discarded = bulk_discard(dead_letters=DeadLetter.objects.all(), actor=operator, reason="noise")

    assert discarded == 2
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert statuses == {
        first.pk: DeadLetter.Status.DISCARDED,
        second.pk: DeadLetter.Status.DISCARDED,
        resolved.pk: DeadLetter.Status.RESOLVED,
    }
    events = [json.loads(e.body) for e in OutboxEvent.objects.filter(subject="operator.dead_letter_discarded.v1")]
    assert sorted(e["dead_letter_id"] for e in events) == [first.pk, second.pk]
    assert {(e["actor"], e["reason"]) for e in events} == {("olivia", "noise")}


def test_more_than_the_cap_is_refused_and_nothing_is_discarded(operator, monkeypatch):
    monkeypatch.setattr(services, "MAX_BULK_DISCARD", 2)
    for _ in range(3):
        make_dead_letter()

    with pytest.raises(BulkDiscardError, match=r"^3 dead letters: narrow the filter to 2 at most\.$"):
        bulk_discard(dead_letters=DeadLetter.objects.all(), actor=operator, reason="noise")

    assert not DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).exists()
