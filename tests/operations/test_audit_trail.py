"""Operator actions reach the immutable audit log through the OPERATOR stream, and show on the
order's timeline."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEntry
from apps.audit.selectors import order_timeline
from apps.eventbus.deadletters.services import dead_letter_discard, dead_letter_reprocess
from apps.eventbus.jetstream.control import consumer_pause, consumer_resume
from tests.bus import wait_for
from tests.factories import make_dead_letter


@pytest.mark.django_db(transaction=True)
def test_reprocess_discard_pause_and_resume_are_in_the_audit_log_with_who_did_them(bus, operator, order):
    call_command("nats_setup", stdout=io.StringIO())
    first = make_dead_letter(correlation_id=str(order.pk))
    second = make_dead_letter()
    dead_letter_reprocess(dead_letter=first, actor=operator)
    dead_letter_discard(dead_letter=second, actor=operator, reason="a test message")
    consumer_pause(name="testing", actor=operator)
    consumer_resume(name="testing", actor=operator)
    expected = {
        "operator.dead_letter_reprocess_requested.v1",
        "operator.dead_letter_discarded.v1",
        "operator.consumer_paused.v1",
        "operator.consumer_resumed.v1",
    }

    with bus.relay(), bus.consumer("audit"):
        wait_for(lambda: expected <= set(AuditEntry.objects.values_list("subject", flat=True)))

    entries = {entry.subject: json.loads(entry.body) for entry in AuditEntry.objects.filter(stream="OPERATOR")}
    assert set(entries) == expected
    assert {entry["actor"] for entry in entries.values()} == {"olivia"}
    assert entries["operator.dead_letter_discarded.v1"]["reason"] == "a test message"
    assert entries["operator.consumer_paused.v1"]["consumer"] == "testing"
    timeline = [event["subject"] for event in order_timeline(str(order.pk))]
    assert "operator.dead_letter_reprocess_requested.v1" in timeline, "the order's timeline shows the reprocess"
    call_command("audit_verify", stdout=io.StringIO())  # the chain still verifies
