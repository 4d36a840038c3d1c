"""The saga per batch: ``order_outcomes_record`` takes a fetched batch of outcomes at once.

Every order of the batch locked in one statement, outcomes applied in stream order, the
changed orders written in one UPDATE and the decisions in one outbox INSERT.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from apps.eventbus.models import OutboxEvent
from apps.eventbus.registry import is_batch_handler, registry
from apps.inventory.events import InventoryRejected, InventoryReserved, RejectedLine
from apps.inventory.services import product_ensure
from apps.orders import handlers, services
from apps.orders.models import Order
from apps.orders.services import Outcome, OutcomeKind
from apps.payments.events import PaymentCompleted, PaymentFailed

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=1000)


def place(count: int = 1) -> list[Order]:
    return [services.order_place(customer_id="c", lines=[("KB", 1)]) for _ in range(count)]


def paid(order, message_id: str = "m-paid") -> Outcome:
    return Outcome(str(order), OutcomeKind.PAYMENT_CAPTURED, "payments.completed.v1", message_id, payment_id="p-1")


def declined(order, message_id: str = "m-declined") -> Outcome:
    return Outcome(
        str(order), OutcomeKind.PAYMENT_FAILED, "payments.failed.v1", message_id, reason="payment failed: card declined"
    )


def reserved(order, message_id: str = "m-reserved") -> Outcome:
    return Outcome(str(order), OutcomeKind.STOCK_RESERVED, "inventory.reserved.v1", message_id)


def rejected(order, message_id: str = "m-rejected") -> Outcome:
    return Outcome(
        str(order), OutcomeKind.STOCK_REJECTED, "inventory.rejected.v1", message_id, reason="stock rejected: KB"
    )


def record(*outcomes: Outcome) -> list[Order | None]:
    with transaction.atomic():
        return services.order_outcomes_record(outcomes=list(outcomes))


def events(subject: str) -> list[dict]:
    return [json.loads(row.body) for row in OutboxEvent.objects.filter(subject=subject).order_by("id")]


def unknown_outcomes(subject: str) -> float:
    return REGISTRY.get_sample_value("orders_unknown_order_outcomes_total", {"subject": subject}) or 0.0


def test_payment_and_reservation_of_one_order_in_one_batch_confirm_it_once(catalogue):
    (order,) = place()
    record(paid(order.id), reserved(order.id, "m-last"))
    order.refresh_from_db()
    assert (order.status, order.payment_state, order.stock_state) == ("CONFIRMED", "captured", "reserved")
    assert order.payment_id == "p-1" and order.decided_at is not None
    (confirmed,) = events("orders.confirmed.v1")
    assert confirmed["order_id"] == str(order.id) and confirmed["payment_id"] == "p-1"
    assert confirmed["total_amount"] == "89.90" and confirmed["currency"] == "EUR"
    assert confirmed["correlation_id"] == str(order.id) and confirmed["causation_id"] == "m-last"
    assert OutboxEvent.objects.get(message_id=confirmed["message_id"]).aggregate_id == str(order.id)
    assert not events("orders.cancelled.v1")


@pytest.mark.parametrize("decline_first", [True, False], ids=["declined+reserved", "reserved+declined"])
def test_a_decline_and_a_reservation_in_one_batch_cancel_the_order_once_with_the_declines_reason(
    catalogue, decline_first
):
    (order,) = place()
    batch = [declined(order.id), reserved(order.id)]
    record(*(batch if decline_first else reversed(batch)))
    order.refresh_from_db()
    assert (order.status, order.payment_state, order.stock_state) == ("CANCELLED", "failed", "reserved")
    assert order.cancel_reason == "payment failed: card declined"
    (cancelled,) = events("orders.cancelled.v1")
    assert cancelled["reason"] == "payment failed: card declined" and cancelled["causation_id"] == "m-declined"
    assert not events("orders.confirmed.v1")


def test_the_first_failure_of_a_batch_decides_a_later_one_only_records_its_fact(catalogue):
    (order,) = place()
    record(rejected(order.id), declined(order.id))
    order.refresh_from_db()
    assert (order.status, order.payment_state, order.stock_state) == ("CANCELLED", "failed", "rejected")
    assert [e["reason"] for e in events("orders.cancelled.v1")] == ["stock rejected: KB"]


def test_duplicate_outcomes_in_a_batch_and_a_redelivered_batch_change_nothing_twice(catalogue):
    (order,) = place()
    batch = [paid(order.id), paid(order.id), reserved(order.id), reserved(order.id), paid(order.id)]
    record(*batch)
    order.refresh_from_db()
    assert order.status == "CONFIRMED" and len(events("orders.confirmed.v1")) == 1
    decided_at, updated_at = order.decided_at, order.updated_at

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        services.order_outcomes_record(outcomes=batch)
    order.refresh_from_db()
    assert (order.decided_at, order.updated_at) == (decided_at, updated_at)
    assert len(events("orders.confirmed.v1")) == 1
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"], "nothing to write: only the lock"


def test_unknown_and_foreign_order_ids_are_counted_and_skipped_and_the_rest_of_the_batch_is_recorded(catalogue):
    first, second = place(2)
    unknown = str(uuid.UUID(int=0))
    before = unknown_outcomes("payments.completed.v1"), unknown_outcomes("inventory.reserved.v1")

    results = record(paid(first.id), paid("external-7"), reserved(unknown), reserved(first.id), declined(second.id))

    assert results[1] is None and results[2] is None
    assert [result.pk for result in (results[0], results[3], results[4])] == [first.pk, first.pk, second.pk]
    after = unknown_outcomes("payments.completed.v1"), unknown_outcomes("inventory.reserved.v1")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("CONFIRMED", "CANCELLED")
    assert [e["order_id"] for e in events("orders.confirmed.v1")] == [str(first.id)]
    assert [e["order_id"] for e in events("orders.cancelled.v1")] == [str(second.id)]


def test_a_foreign_order_id_reaches_the_log_as_one_bounded_line(catalogue, caplog):
    """Outcome contracts leave order_id unbounded (a bound would now be a breaking change)."""
    hostile = "x\nFORGED log line\x1b[31m" + "y" * 100_000
    with caplog.at_level("INFO", logger="apps.orders.services"):
        assert record(paid(hostile)) == [None]
    (line,) = [r.getMessage() for r in caplog.records if "did not create" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line and len(line) < 400


def test_a_batch_of_only_unknown_orders_writes_nothing(catalogue):
    assert record(paid("external-7"), reserved(uuid.UUID(int=1))) == [None, None]
    assert not OutboxEvent.objects.exclude(subject="orders.created.v1").exists()


def test_a_late_outcome_for_a_cancelled_order_records_the_fact_only(catalogue):
    (order,) = place()
    services.order_cancel(order_id=str(order.id), reason="changed my mind")
    order.refresh_from_db()
    decided_at = order.decided_at

    record(paid(order.id), reserved(order.id))

    order.refresh_from_db()
    assert (order.status, order.payment_state, order.stock_state) == ("CANCELLED", "captured", "reserved")
    assert order.cancel_reason == "changed my mind" and order.decided_at == decided_at
    assert [e["reason"] for e in events("orders.cancelled.v1")] == ["changed my mind"]
    assert not events("orders.confirmed.v1")


@pytest.mark.parametrize("count", [1, 50])
def test_statements_per_batch_do_not_grow_with_the_batch(catalogue, count):
    orders = place(count)
    batch = [outcome for order in orders for outcome in (paid(order.id), reserved(order.id))]
    batch += [declined(uuid.UUID(int=2)), paid("external")]  # unknown orders cost no statement either

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        services.order_outcomes_record(outcomes=batch)

    statements = [q["sql"][:60] for q in queries.captured_queries]
    assert len(statements) == 4, statements  # lock the orders, update them, insert the events, wake the relay
    assert "FOR UPDATE" in queries.captured_queries[0]["sql"]
    assert Order.objects.filter(status="CONFIRMED").count() == count == len(events("orders.confirmed.v1"))


def test_the_saga_duration_is_observed_once_per_decision_when_the_batch_commits(
    catalogue, django_capture_on_commit_callbacks
):
    def observed() -> float:
        return REGISTRY.get_sample_value("order_saga_duration_seconds_count", {"outcome": "confirmed"}) or 0.0

    orders = place(3)
    before = observed()
    with django_capture_on_commit_callbacks(execute=True):
        record(*[outcome for order in orders for outcome in (paid(order.id), reserved(order.id), paid(order.id))])
    assert observed() - before == 3


def test_the_orders_consumer_hands_every_outcome_subject_to_one_batch_handler():
    spec = registry.consumer("orders")
    subjects = [
        "payments.completed.v1", "payments.failed.v1", "payments.refunded.v1",
        "inventory.reserved.v1", "inventory.rejected.v1", "inventory.released.v1",
    ]  # fmt: skip
    handlers_ = {spec.handler_for(subject) for subject in subjects}
    assert handlers_ == {handlers.on_outcomes} and is_batch_handler(handlers.on_outcomes)


def test_the_handler_turns_each_outcome_event_into_its_outcome_in_stream_order(catalogue):
    first, second = place(2)
    batch = [
        PaymentCompleted(
            order_id=str(first.id), payment_id="pay-1", amount=Decimal("89.90"), currency="EUR",
            gateway_charge_id="ch_1",
        ),
        InventoryReserved(order_id=str(first.id)),
        InventoryRejected(
            order_id=str(second.id), lines=(RejectedLine(sku="KB", requested=1, available=0, reason="out_of_stock"),)
        ),
        PaymentFailed(order_id=str(second.id), reason="declined: card_declined"),
    ]  # fmt: skip

    with transaction.atomic():
        handlers.on_outcomes(batch)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.payment_id) == ("CONFIRMED", "pay-1")
    assert (second.status, second.payment_state) == ("CANCELLED", "failed")
    assert second.cancel_reason == "stock rejected: KB (out_of_stock)"
    (confirmed,) = events("orders.confirmed.v1")
    (cancelled,) = events("orders.cancelled.v1")
    assert confirmed["causation_id"] == batch[1].message_id and cancelled["causation_id"] == batch[2].message_id
