"""order_place and the saga: every path, outcomes in any order and more than once."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.eventbus.models import OutboxEvent
from apps.inventory.services import product_ensure
from apps.orders import services
from apps.orders.errors import InvalidOrder, InvalidTransition, UnknownSku
from apps.orders.models import Order
from apps.payments.events import PaymentCompleted
from tests.bus import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=10)
    product_ensure(sku="MS", name="Mouse", price=Decimal("34.50"), stock_on_hand=1)


def events(subject: str) -> list[dict]:
    return [json.loads(row.body) for row in OutboxEvent.objects.filter(subject=subject).order_by("id")]


def status(order: Order) -> str:
    order.refresh_from_db()
    return order.status


PAID = (
    "paid",
    lambda o: services.order_payment_captured(order_id=str(o.id), payment_id="p-1", subject="s", causation_id="m"),
)
DECLINED = (
    "declined",
    lambda o: services.order_payment_failed(order_id=str(o.id), reason="card declined", subject="s", causation_id="m"),
)
RESERVED = ("reserved", lambda o: services.order_stock_reserved(order_id=str(o.id), subject="s", causation_id="m"))
REJECTED = (
    "rejected",
    lambda o: services.order_stock_rejected(order_id=str(o.id), reason="out of stock", subject="s", causation_id="m"),
)


def test_order_place_prices_from_the_catalogue_and_writes_the_event_with_the_order(catalogue):
    order = services.order_place(customer_id="c-1", lines=[("KB", 2), ("MS", 1)])
    assert order.status == "PENDING" and order.total_amount == Decimal("214.30") and order.currency == "EUR"
    (created,) = events("orders.created.v1")
    assert created["order_id"] == str(order.id) and created["correlation_id"] == str(order.id)
    assert created["total_amount"] == "214.30"
    assert created["lines"] == [
        {"sku": "KB", "quantity": 2, "unit_price": "89.90"},
        {"sku": "MS", "quantity": 1, "unit_price": "34.50"},
    ]


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([], InvalidOrder),
        ([("KB", 0)], InvalidOrder),
        ([("KB", 1), ("KB", 2)], InvalidOrder),
        ([("KB", 1001)], InvalidOrder),
        ([("NOPE", 1)], UnknownSku),
    ],
)
def test_bad_orders_are_refused_and_write_nothing(catalogue, lines, error):
    with pytest.raises(error):
        services.order_place(customer_id="c", lines=lines)
    assert not Order.objects.exists() and not OutboxEvent.objects.exists()


@pytest.mark.parametrize(
    ("outcomes", "final"),
    [
        ((PAID, RESERVED), "CONFIRMED"),
        ((RESERVED, PAID), "CONFIRMED"),
        ((PAID, PAID, RESERVED, RESERVED), "CONFIRMED"),
        ((DECLINED, RESERVED), "CANCELLED"),
        ((RESERVED, DECLINED), "CANCELLED"),
        ((PAID, REJECTED), "CANCELLED"),
        ((REJECTED, PAID), "CANCELLED"),
        ((DECLINED, REJECTED), "CANCELLED"),
        ((REJECTED, REJECTED, DECLINED), "CANCELLED"),
    ],
    ids=lambda value: "+".join(name for name, _ in value) if isinstance(value, tuple) else value,
)
def test_every_path_of_the_saga_in_any_order_and_repeated(catalogue, outcomes, final):
    order = services.order_place(customer_id="c", lines=[("KB", 1)])
    for _, apply in outcomes:
        apply(order)
    assert status(order) == final
    assert len(events("orders.confirmed.v1")) == (final == "CONFIRMED")
    assert len(events("orders.cancelled.v1")) == (final == "CANCELLED"), "one decision, published once"


def test_a_customer_cancels_a_confirmed_order_once(catalogue):
    order = services.order_place(customer_id="c", lines=[("KB", 1)])
    PAID[1](order)
    RESERVED[1](order)
    services.order_cancel(order_id=str(order.id), reason="changed my mind")
    assert status(order) == "CANCELLED"
    with pytest.raises(InvalidTransition):
        services.order_cancel(order_id=str(order.id), reason="again")
    assert [e["reason"] for e in events("orders.cancelled.v1")] == ["changed my mind"]


def test_outcomes_for_orders_this_platform_did_not_create_are_ignored(catalogue):
    assert services.order_payment_captured(order_id="external-7", payment_id="p", subject="s", causation_id="m") is None
    assert (
        services.order_stock_reserved(order_id="00000000-0000-0000-0000-000000000000", subject="s", causation_id="m")
        is None
    )
    assert not OutboxEvent.objects.exists()


@pytest.mark.slow
def test_an_order_goes_through_real_consumers_to_confirmed_and_one_to_cancelled(bus, catalogue):
    paid = services.order_place(customer_id="c", lines=[("KB", 1)])
    short = services.order_place(customer_id="c", lines=[("MS", 2)])  # one mouse in stock
    for order in (paid, short):  # payments is not built yet: its outcome is published by the test
        bus.publish_event(
            PaymentCompleted(
                order_id=str(order.id), payment_id=f"pay-{order.id}", amount=order.total_amount,
                currency="EUR", gateway_charge_id="ch_test", correlation_id=str(order.id),
            )
        )  # fmt: skip
    with bus.relay(), bus.consumer("inventory"), bus.consumer("orders"):
        wait_for(lambda: status(paid) == "CONFIRMED", timeout=30)
        wait_for(lambda: status(short) == "CANCELLED", timeout=30)
    short.refresh_from_db()
    assert "stock rejected: MS (out_of_stock)" in short.cancel_reason
    assert [e["order_id"] for e in events("orders.confirmed.v1")] == [str(paid.id)]


def test_simulate_orders_places_orders_and_poison_through_the_real_path(catalogue):
    out = io.StringIO()
    call_command(
        "simulate_orders", "--rate", "40", "--duration", "1", "--poison-rate", "0.25", "--seed", "7", stdout=out
    )
    placed = Order.objects.count()
    poison = OutboxEvent.objects.filter(body__contains="not money").count()
    assert placed + poison == 40 and placed > 0 and poison > 0
    assert OutboxEvent.objects.filter(subject="orders.created.v1").count() == placed + poison
    assert "(done)" in out.getvalue()
