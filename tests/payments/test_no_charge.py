"""Orders that need no charge: a zero total is paid without asking the provider (which refuses
a 0.00 charge), and an order cancelled before its charge is never charged. Against the real
gateway simulator, nats-server and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import transaction

from apps.eventbus.contracts import decode
from apps.eventbus.models import DeadLetter, OutboxEvent, ProcessedMessage
from apps.inventory.models import Product
from apps.inventory.services import product_ensure
from apps.orders.events import OrderCancelled, OrderCreated
from apps.orders.services import order_cancel, order_place
from apps.payments.models import Payment
from apps.payments.services import (
    NO_CHARGE_NEEDED,
    ChargeAnswer,
    ChargeRequest,
    payment_charges_record,
    payment_charges_request,
)
from tests.bus import decided, wait_for
from tests.gateway import Gateway, charges
from tests.support import make_user


@pytest.fixture
def gateway(settings, tmp_path):
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    settings.PAYMENT_GATEWAY_URL = gateway.url
    yield gateway
    gateway.stop()


@pytest.fixture
def platform(bus, gateway):
    product_ensure(sku="FREE", name="Sample", price=Decimal("0.00"), stock_on_hand=10)
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=100)
    with bus.running("inventory", "payments", "orders"):
        yield gateway


def requests_seen(gateway: Gateway) -> int:
    return gateway.call("GET", "/_stats")[1]["requests"]


def handled_by(consumer: str, subject: str, order_id: str) -> bool:
    """The consumer committed a message of ``subject`` about the order (its ledger row)."""
    message_ids = [
        json.loads(row.body)["message_id"] for row in OutboxEvent.objects.filter(subject=subject, aggregate_id=order_id)
    ]
    return ProcessedMessage.objects.filter(consumer=consumer, message_id__in=message_ids).exists()


@pytest.mark.slow
def test_a_free_order_placed_through_the_api_is_confirmed_without_a_charge(platform, bus):
    """The reproduction: POST /api/orders/ for a product priced 0.00 ended PENDING (payments
    dead-lettered the provider's refusal of a 0.00 charge) with its stock reserved. The
    provider is even down meanwhile: a free order does not depend on it."""
    platform.control(outage=True)
    from rest_framework.test import APIClient

    from apps.api.services import auth_token_issue

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {auth_token_issue(user=make_user('alice')).key}")
    response = client.post(
        "/api/orders/", {"lines": [{"sku": "FREE", "quantity": 2}], "currency": "EUR"}, format="json"
    )
    assert response.status_code == 201, response.content

    order = decided(response.json()["id"])
    assert order.status == "CONFIRMED" and order.total_amount == Decimal("0.00")
    payment = Payment.objects.get(order_id=str(order.pk))
    assert (payment.status, payment.amount, payment.currency) == ("NO_CHARGE", Decimal("0.00"), "EUR")
    assert payment.gateway_charge_id == "" and order.payment_id == str(payment.pk)
    assert Product.objects.get(sku="FREE").stock_on_hand == 8, "reserved, and kept: the order is confirmed"
    assert requests_seen(platform) == 0, "the provider was never asked"
    assert bus.stream_messages("DLQ") == 0 and not DeadLetter.objects.exists()


@pytest.mark.slow
def test_cancelling_a_free_order_releases_its_stock_and_asks_for_no_refund(platform, bus):
    order = order_place(customer_id="c", lines=[("FREE", 3)])
    assert decided(order.pk).status == "CONFIRMED"

    order_cancel(order_id=str(order.pk), reason="changed my mind")

    wait_for(lambda: Product.objects.get(sku="FREE").stock_on_hand == 10, timeout=30)
    wait_for(lambda: handled_by("payments", "orders.cancelled.v1", str(order.pk)), timeout=30)
    assert Payment.objects.get(order_id=str(order.pk)).status == "NO_CHARGE", "nothing to refund"
    assert not OutboxEvent.objects.filter(subject="payments.refunded.v1").exists()
    assert requests_seen(platform) == 0, "no charge, no refund"
    assert bus.stream_messages("DLQ") == 0


@pytest.mark.django_db(transaction=True)
def test_one_batch_charges_the_paid_order_once_and_records_the_free_one_without_a_call(gateway):
    """Claim -> call -> record for a batch that mixes totals: one call, both completed."""
    requests = [ChargeRequest("o-free", Decimal("0.00"), "EUR"), ChargeRequest("o-paid", Decimal("12.30"), "EUR")]

    answers = payment_charges_request(requests=requests)
    assert answers["o-free"] is NO_CHARGE_NEEDED and answers["o-paid"].succeeded
    with transaction.atomic():
        payment_charges_record(
            answers=[ChargeAnswer(r.order_id, answers[r.order_id], f"m-{r.order_id}") for r in requests]
        )
    # The same batch again (a redelivery): both are decided, nothing is claimed or called.
    assert payment_charges_request(requests=requests) == {}

    assert requests_seen(gateway) == 1, "one call: the paid order's"
    assert [c["amount"] for c in charges(gateway, "o-paid")] == ["12.30"] and charges(gateway, "o-free") == []
    statuses = dict(Payment.objects.values_list("order_id", "status"))
    assert statuses == {"o-free": "NO_CHARGE", "o-paid": "CAPTURED"}
    completed = {body["order_id"]: body for body in map(json.loads, OutboxEvent.objects.values_list("body", flat=True))}
    assert completed["o-free"]["amount"] == "0.00" and completed["o-free"]["gateway_charge_id"] == ""
    assert completed["o-paid"]["gateway_charge_id"] == charges(gateway, "o-paid")[0]["id"]


@pytest.mark.slow
def test_an_order_cancelled_before_its_charge_is_never_charged_and_its_payment_has_the_orders_currency(platform, bus):
    """The cancellation overtakes the order (another producer's order, in GBP): payments stops
    the charge with a row in the event's currency, then acknowledges the order without a call."""
    bus.publish_event(OrderCancelled(order_id="ext-order-7", reason="fraud check", currency="GBP"))
    wait_for(lambda: Payment.objects.filter(order_id="ext-order-7").exists(), timeout=30)
    payment = Payment.objects.get(order_id="ext-order-7")
    assert (payment.status, payment.amount, payment.currency) == ("FAILED", Decimal("0.00"), "GBP")
    assert payment.failure_reason == "order cancelled"

    created = OrderCreated(
        order_id="ext-order-7", customer_id="x", total_amount=Decimal("45.00"), currency="GBP", created_at=0
    )
    bus.publish_event(created)
    wait_for(lambda: ProcessedMessage.objects.filter(consumer="payments", message_id=created.message_id).exists())
    assert Payment.objects.get(order_id="ext-order-7").status == "FAILED"
    assert charges(platform, "ext-order-7") == [] and requests_seen(platform) == 0
    assert bus.stream_messages("DLQ") == 0


def test_an_older_cancellation_without_a_currency_reads_as_the_platforms():
    body = b'{"message_id": "m-1", "order_id": "o-1", "reason": "changed my mind"}'
    assert decode("orders.cancelled.v1", body).currency == "EUR"
