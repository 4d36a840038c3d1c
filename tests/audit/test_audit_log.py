"""The audit log: every event of every stream, append-only in the database, hash-chained."""

from __future__ import annotations

import io
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEntry
from apps.inventory.events import InventoryReserved
from apps.orders.events import OrderCreated
from apps.payments.events import PaymentFailed
from tests.bus import wait_for


def verify_output() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


@pytest.fixture
def audited(bus):
    """Events on the three domain streams (one in the minimal external form), audited."""
    created = OrderCreated(
        order_id="o-1", customer_id="c-1", total_amount=Decimal("10.00"), created_at=int(time.time() * 1000),
        correlation_id="o-1",
    )  # fmt: skip
    bus.publish_event(created)
    bus.publish(
        "orders.created.v1",
        b'{"message_id": "ext-1", "order_id": "ext-order", "customer_id": "x", "total_amount": 99.95, '
        b'"created_at": 1764000000000}',
        msg_id="ext-1",
    )
    bus.publish_event(PaymentFailed(order_id="o-1", reason="declined", correlation_id="o-1"))
    bus.publish_event(InventoryReserved(order_id="o-1", correlation_id="o-1"))
    bus.publish_event(created, msg_id="a-redelivered-copy")  # the same event again
    with bus.consumer("audit"):
        wait_for(lambda: AuditEntry.objects.count() == 4, timeout=30)
        wait_for(lambda: bus.drained("ORDERS", "audit"), timeout=30)
    return created


def test_every_event_of_every_stream_is_recorded_once(audited):
    entries = list(AuditEntry.objects.order_by("id"))
    assert {e.subject for e in entries} == {"orders.created.v1", "payments.failed.v1", "inventory.reserved.v1"}
    assert {e.message_id for e in entries if e.subject == "orders.created.v1"} == {audited.message_id, "ext-1"}
    external = AuditEntry.objects.get(message_id="ext-1")
    assert '"total_amount": 99.95' in external.body, "kept exactly as received"
    assert external.stream == "ORDERS" and external.stream_sequence == 2
    assert AuditEntry.objects.filter(correlation_id="o-1").count() == 3
    assert "audit chain verified: 4 entries" in verify_output()


def test_the_database_refuses_update_and_delete(audited):
    entry = AuditEntry.objects.first()
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(body="{}")
    with pytest.raises(DatabaseError, match="append-only: DELETE refused"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()


def test_tampering_is_detected_at_the_first_edited_entry(audited):
    second = AuditEntry.objects.order_by("id")[1]
    with connection.cursor() as cursor:  # what only a superuser could do, bypassing the trigger
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
        cursor.execute("UPDATE audit_auditentry SET body = '{\"forged\": true}' WHERE id = %s", [second.pk])
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")
    with pytest.raises(CommandError, match=rf"broken at entry {second.pk} after 1 good entries: .*edited"):
        verify_output()


def test_replay_rebuilds_the_audit_log_into_an_empty_database(audited):
    before = sorted(AuditEntry.objects.values_list("message_id", "subject", "stream", "stream_sequence", "body"))
    with connection.cursor() as cursor:  # an empty database: TRUNCATE is not refused, UPDATE/DELETE are
        cursor.execute("TRUNCATE audit_auditentry")
        cursor.execute("DELETE FROM eventbus_processedmessage WHERE consumer = 'audit'")
    out = io.StringIO()
    for stream in ("ORDERS", "PAYMENTS", "INVENTORY"):
        call_command("replay", "--stream", stream, "--consumer", "audit", stdout=out)
    after = sorted(AuditEntry.objects.values_list("message_id", "subject", "stream", "stream_sequence", "body"))
    assert after == before, "the same entries"
    assert "audit chain verified: 4 entries" in verify_output()
    assert "replayed 3 message(s) of ORDERS through audit" in out.getvalue()

    call_command("replay", "--stream", "ORDERS", "--consumer", "audit", "--from-seq", "2", stdout=out)
    assert AuditEntry.objects.count() == 4, "replaying again changes nothing"
