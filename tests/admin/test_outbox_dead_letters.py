"""Events the relay set aside (JetStream could never accept them): visible to operators and
auditors, requeued or discarded by operators only, every action audited."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.eventbus.models import OutboxDeadLetter, OutboxEvent

CHANGELIST = "admin:eventbus_outboxdeadletter_changelist"


@pytest.fixture
def set_aside(db):
    now = timezone.now()
    return OutboxDeadLetter.objects.create(
        outbox_id=41,
        message_id="m-41",
        subject="nowhere.at.all",
        aggregate_id="order-41",
        body='{"note": "x"}',
        headers={"Content-Type": "application/json"},
        created_at=now,
        refused_at=now,
        reason="no stream captures the subject 'nowhere.at.all'",
        status_changed_at=now,
    )


def operator_events(subject: str) -> list[dict]:
    return [json.loads(row.body) for row in OutboxEvent.objects.filter(subject=subject)]


def test_an_auditor_sees_set_aside_events_with_their_reason_and_cannot_act(client, auditor, set_aside):
    client.force_login(auditor)
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "nowhere.at.all" in page and "no stream captures" in page
    assert "requeue_selected" not in page
    response = client.post(reverse(CHANGELIST), {"action": "requeue_selected", "_selected_action": [set_aside.pk]})
    assert response.status_code in (200, 302, 403)
    set_aside.refresh_from_db()
    assert set_aside.status == OutboxDeadLetter.Status.REFUSED
    assert not OutboxEvent.objects.filter(message_id="m-41").exists()


def test_an_operator_requeues_a_copy_and_the_action_is_audited(client, operator, set_aside):
    client.force_login(operator)
    client.post(reverse(CHANGELIST), {"action": "requeue_selected", "_selected_action": [set_aside.pk]})
    set_aside.refresh_from_db()
    assert set_aside.status == OutboxDeadLetter.Status.REQUEUED and "olivia" in set_aside.note
    copy = OutboxEvent.objects.get(message_id="m-41")
    assert (copy.subject, copy.aggregate_id, copy.body, copy.sent_at) == (
        "nowhere.at.all", "order-41", '{"note": "x"}', None,
    )  # fmt: skip
    (event,) = operator_events("operator.outbox_event_requeued.v1")
    assert event["actor"] == "olivia" and event["event_message_id"] == "m-41"
    # a second requeue of the same row does nothing
    client.post(reverse(CHANGELIST), {"action": "requeue_selected", "_selected_action": [set_aside.pk]})
    assert OutboxEvent.objects.filter(message_id="m-41").count() == 1


def test_discarding_needs_a_reason_and_is_audited(client, operator, set_aside):
    client.force_login(operator)
    client.post(reverse(CHANGELIST), {"action": "discard_selected", "_selected_action": [set_aside.pk], "reason": ""})
    set_aside.refresh_from_db()
    assert set_aside.status == OutboxDeadLetter.Status.REFUSED, "no reason: nothing discarded"
    client.post(
        reverse(CHANGELIST),
        {"action": "discard_selected", "_selected_action": [set_aside.pk], "reason": "test junk"},
    )
    set_aside.refresh_from_db()
    assert set_aside.status == OutboxDeadLetter.Status.DISCARDED and set_aside.note == "test junk"
    (event,) = operator_events("operator.outbox_event_discarded.v1")
    assert event["reason"] == "test junk" and event["actor"] == "olivia"
