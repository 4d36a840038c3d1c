"""The audit log: every event of every stream, append-only in the database, hash-chained."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from apps.audit.chain import GENESIS, verify
from apps.audit.models import AuditEntry
from apps.audit.services import audit_append, audit_record
from apps.eventbus.consuming.delivery import Delivery
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


# -- the append path itself, without NATS ------------------------------------------------

TRICKY = 'tab\there, newline\nand CR\r, back\\slash, "quotes", \\N, é, 日本, emoji \U0001f600, nul-free \x01'


def reference_hash(**fields) -> str:
    """The hash as the log has always defined it (what existing chains were hashed with)."""
    content = {
        "previous": fields["previous_hash"], "subject": fields["subject"], "message_id": fields["message_id"],
        "correlation_id": fields["correlation_id"], "stream": fields["stream"],
        "stream_sequence": fields["stream_sequence"], "body": fields["body"], "headers": fields["headers"],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.parametrize(
    "fields",
    [
        {"body": "{}", "headers": {}},
        {"body": TRICKY, "headers": {"Nats-Msg-Id": TRICKY, "a": "1", "B": "2", "nested": {"z": [1, 2.5, None, True]}}},
        {"subject": TRICKY, "message_id": "é", "correlation_id": "", "stream": "S\t", "stream_sequence": 2**62},
        {"stream_sequence": True, "headers": []},  # odd types take the reference path
    ],
)
def test_the_hash_covers_exactly_what_it_always_did(fields):
    from apps.audit.chain import canonical_json, entry_hash

    base = {
        "previous_hash": "ab" * 32, "subject": "orders.created.v1", "message_id": "m-1", "correlation_id": "o-1",
        "stream": "ORDERS", "stream_sequence": 7, "body": '{"x": 1}', "headers": {"Nats-Msg-Id": "m-1"},
    }  # fmt: skip
    fields = {**base, **fields}
    assert entry_hash(**fields) == reference_hash(**fields)
    assert entry_hash(**fields, headers_json=canonical_json(fields["headers"])) == reference_hash(**fields)


def delivery(stream: str, sequence: int, body: bytes, msg_id: str, subject: str = "orders.created.v1") -> Delivery:
    return Delivery(
        stream=stream, delivery_subject=subject, data=body, headers={"Nats-Msg-Id": msg_id},
        stream_sequence=sequence, num_delivered=1,
    )  # fmt: skip


def body(message_id: str, **extra) -> bytes:
    return json.dumps({"message_id": message_id, **extra}).encode()


def chain_verifies() -> tuple[int, object]:
    return verify(AuditEntry.objects.order_by("id").iterator())


@pytest.mark.django_db
def test_a_batch_across_streams_chains_in_order_and_enters_a_duplicate_event_once():
    batch = [
        delivery("ORDERS", 1, body("e-1", correlation_id="o-1"), "e-1"),
        delivery("PAYMENTS", 1, body("e-2", correlation_id="o-1"), "e-2", "payments.failed.v1"),
        delivery("ORDERS", 2, body("e-1", correlation_id="o-1"), "a-copy-of-e-1"),  # the same event again
        delivery("INVENTORY", 5, body("e-3", correlation_id=42), "e-3", "inventory.reserved.v1"),
        delivery("OPERATOR", 9, b"not json \t\n\\", "op-1", "operator.something.v1"),  # kept as received
        delivery("ORDERS", 3, TRICKY.encode(), "tricky"),
    ]
    with transaction.atomic():
        entries = audit_append(deliveries=batch)

    assert [e.message_id for e in entries] == ["e-1", "e-2", "e-3", "op-1", "tricky"]
    stored = list(AuditEntry.objects.order_by("id"))
    assert [e.pk for e in stored] == [e.pk for e in entries], "returned as saved, in chain (id) order"
    assert [(e.stream, e.stream_sequence) for e in stored] == [
        ("ORDERS", 1), ("PAYMENTS", 1), ("INVENTORY", 5), ("OPERATOR", 9), ("ORDERS", 3)
    ]  # fmt: skip
    assert stored[0].previous_hash == GENESIS
    assert all(later.previous_hash == earlier.hash for earlier, later in itertools.pairwise(stored))
    assert [e.correlation_id for e in stored] == ["o-1", "o-1", "42", "", ""]
    assert stored[3].body == "not json \t\n\\" and stored[4].body == TRICKY, "bodies exactly as received"
    assert stored[4].headers == {"Nats-Msg-Id": "tricky"}
    assert chain_verifies() == (5, None)


@pytest.mark.django_db
def test_the_next_batch_continues_the_chain_and_skips_what_is_in_already():
    with transaction.atomic():
        audit_append(deliveries=[delivery("ORDERS", 1, body("e-1"), "e-1"), delivery("ORDERS", 2, body("e-2"), "e-2")])
    with transaction.atomic():
        assert audit_record(deliveries=[delivery("ORDERS", 1, body("e-1"), "e-1")]) == 0, "replayed: nothing new"
        e2_copy, e3 = delivery("ORDERS", 2, body("e-2"), "x"), delivery("ORDERS", 3, body("e-3"), "e-3")
        again = audit_append(deliveries=[e2_copy, e3])
    assert [e.message_id for e in again] == ["e-3"]
    assert again[0].previous_hash == AuditEntry.objects.get(message_id="e-2").hash
    assert chain_verifies() == (3, None)
    assert audit_append(deliveries=[]) == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_appenders_keep_one_linear_chain():
    """Two replicas appending at once: the advisory lock serialises them, no fork, nothing lost."""
    barrier = threading.Barrier(2)
    errors = []

    def replica(name: str) -> None:
        try:
            barrier.wait(5)
            for round_ in range(5):
                batch = [delivery("ORDERS", i, body(f"{name}-{round_}-{i}"), f"{name}-{round_}-{i}") for i in range(40)]
                with transaction.atomic():
                    audit_record(deliveries=batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=replica, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert chain_verifies() == (400, None)


@pytest.mark.parametrize(
    "data",
    [
        b'{"message_id": "m", "correlation_id": "c"}',
        b'{"message_id": "", "correlation_id": 7}',
        b'{"message_id": 12, "correlation_id": true, "x": {"message_id": "nested"}}',
        b'{"message_id": "m"} trailing',
        b'  {"message_id": "m"}  ',
        b"\xef\xbb\xbf" + b'{"message_id": "bom"}',
        '{"message_id": "utf-16"}'.encode("utf-16-le"),
        b'{"message_id": "\xff"}',
        b'{"message_id": "dup", "message_id": "last"}',
        b"[1]",
        b"{",
        b"{}",
        b"",
        b"not json",
        b"[" * 100_000,  # deeper than the JSON parser recurses
        b'{"message_id": ' * 100_000,
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Nats-Msg-Id": "broker-id"}, {"Eventbus-Message-Id": "original"}])
@pytest.mark.django_db
def test_event_ids_are_read_as_the_delivery_reads_them(data, headers):
    d = Delivery(stream="ORDERS", delivery_subject="orders.created.v1", data=data, headers=headers,
                 stream_sequence=3, num_delivered=1)  # fmt: skip
    with transaction.atomic():
        (entry,) = audit_append(deliveries=[d])
    assert (entry.message_id, entry.correlation_id) == (d.event_id, d.correlation_id)


@pytest.mark.django_db
def test_bodies_and_ids_the_columns_cannot_hold_are_entered_storably_and_chained():
    """A NUL byte (PostgreSQL text refuses it) or a 101-character event id once failed the whole
    append on every delivery; each is entered, and the chain verifies."""
    long_ids = b'{"message_id": "' + b"e" * 101 + b'", "correlation_id": "' + b"c" * 101 + b'"}'
    inputs = [
        (b"\x00", {"Nats-Msg-Id": "nul-body"}),
        (long_ids, {"Nats-Msg-Id": "long"}),
        (b'{"message_id": "nul-in-correlation", "correlation_id": "a\\u0000b"}', {"X-Note": "a\x00b"}),
    ]
    deliveries = [
        Delivery(
            stream="ORDERS",
            delivery_subject="orders.created.v1",
            data=data,
            headers=headers,
            stream_sequence=n,
            num_delivered=1,
        )
        for n, (data, headers) in enumerate(inputs, start=1)
    ]
    with transaction.atomic():
        entries = audit_append(deliveries=deliveries)
    assert [(e.message_id, e.correlation_id) for e in entries] == [
        ("nul-body", ""), ("long", ""), ("nul-in-correlation", ""),
    ]  # fmt: skip
    assert entries[0].body == "\ufffd" and entries[2].headers == {"X-Note": "a\ufffdb"}
    assert chain_verifies() == (3, None)
