"""Reserve all lines or none, never oversell, release exactly once."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.eventbus.models import OutboxEvent
from apps.inventory.models import Product, Reservation, StockDecision
from apps.inventory.services import ReserveRequest, product_ensure, stock_release, stock_reserve, stock_reserve_many
from apps.orders.events import OrderCreated
from tests.bus import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    for sku, stock in (("KB", 10), ("MS", 2), ("LAST", 5)):
        product_ensure(sku=sku, name=sku, price=Decimal("9.99"), stock_on_hand=stock)


def stock(sku: str) -> int:
    return Product.objects.get(sku=sku).stock_on_hand


def published(subject: str) -> list[dict]:
    return [json.loads(row.body) for row in OutboxEvent.objects.filter(subject=subject).order_by("id")]


def reserve(order_id: str, *lines: tuple[str, int]) -> StockDecision:
    with transaction.atomic():
        return stock_reserve(order_id=order_id, lines=list(lines))


def release(order_id: str) -> StockDecision:
    with transaction.atomic():
        return stock_release(order_id=order_id)


def test_all_lines_are_reserved_together(catalogue):
    assert reserve("o1", ("KB", 3), ("MS", 2)).outcome == "reserved"
    assert (stock("KB"), stock("MS")) == (7, 0)
    assert Reservation.objects.filter(order_id="o1").count() == 2
    (event,) = published("inventory.reserved.v1")
    assert event["order_id"] == "o1" and event["correlation_id"] == "o1"
    assert event["lines"] == [{"sku": "KB", "quantity": 3}, {"sku": "MS", "quantity": 2}]


def test_one_short_line_rejects_the_whole_order_and_reserves_nothing(catalogue):
    decision = reserve("o2", ("KB", 1), ("MS", 3), ("NOPE", 1))
    assert decision.outcome == "rejected"
    assert (stock("KB"), stock("MS")) == (10, 2)
    assert not Reservation.objects.exists()
    (event,) = published("inventory.rejected.v1")
    assert event["lines"] == [
        {"sku": "MS", "requested": 3, "available": 2, "reason": "out_of_stock"},
        {"sku": "NOPE", "requested": 1, "available": 0, "reason": "unknown_sku"},
    ]


def test_an_order_is_decided_once(catalogue):
    reserve("o3", ("KB", 4))
    reserve("o3", ("KB", 4))  # the same order again (a duplicate producer)
    assert stock("KB") == 6
    assert len(published("inventory.reserved.v1")) == 1


def test_release_gives_stock_back_exactly_once(catalogue):
    reserve("o4", ("KB", 4), ("MS", 1))
    assert release("o4").outcome == "released"
    assert release("o4").outcome == "released"
    assert (stock("KB"), stock("MS")) == (10, 2)
    assert len(published("inventory.released.v1")) == 1
    assert Reservation.objects.filter(order_id="o4", released_at__isnull=False).count() == 2


def test_a_cancellation_that_overtakes_its_order_keeps_it_from_being_reserved(catalogue):
    assert release("o5").outcome == "cancelled_first"
    assert reserve("o5", ("KB", 1)).outcome == "cancelled_first"
    assert stock("KB") == 10
    assert not published("inventory.released.v1") and not published("inventory.reserved.v1")


def test_an_order_without_lines_reserves_nothing_and_says_so(catalogue):
    assert reserve("external-1").outcome == "reserved"
    assert published("inventory.reserved.v1")[0]["lines"] == []


def test_the_database_refuses_negative_stock(catalogue):
    from django.db import IntegrityError
    from django.db.models import F

    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(sku="MS").update(stock_on_hand=F("stock_on_hand") - 3)


@pytest.mark.slow
def test_two_inventory_consumers_racing_on_the_last_units_never_oversell(bus, catalogue):
    orders = [
        OrderCreated(
            order_id=f"race-{i}",
            customer_id="c",
            total_amount=Decimal("9.99"),
            lines=({"sku": "LAST", "quantity": 1, "unit_price": "9.99"},),
            created_at=int(time.time() * 1000),
            correlation_id=f"race-{i}",
        )
        for i in range(40)
    ]
    for order in orders:
        bus.publish_event(order)
    with bus.consumer("inventory", batch_size=3), bus.consumer("inventory", batch_size=3):
        wait_for(lambda: StockDecision.objects.count() == 40, timeout=60)
    assert stock("LAST") == 0
    assert StockDecision.objects.filter(outcome="reserved").count() == 5
    assert Reservation.objects.filter(product__sku="LAST").count() == 5
    assert len(published("inventory.reserved.v1")) == 5
    assert len(published("inventory.rejected.v1")) == 35


def reserve_many(*requests: tuple[str, list[tuple[str, int]]]) -> dict[str, str]:
    with transaction.atomic():
        return stock_reserve_many(requests=[ReserveRequest(order_id, tuple(lines)) for order_id, lines in requests])


def test_a_batch_decides_its_orders_in_order_against_the_stock_the_earlier_ones_left(catalogue):
    outcomes = reserve_many(("a", [("MS", 1), ("KB", 1)]), ("b", [("MS", 2)]), ("c", [("MS", 1)]), ("d", [("KB", 9)]))
    assert outcomes == {"a": "reserved", "b": "rejected", "c": "reserved", "d": "reserved"}
    assert (stock("MS"), stock("KB")) == (0, 0)
    assert sorted(Reservation.objects.values_list("order_id", "product__sku", "quantity")) == [
        ("a", "KB", 1), ("a", "MS", 1), ("c", "MS", 1), ("d", "KB", 9),
    ]  # fmt: skip
    (rejected,) = published("inventory.rejected.v1")
    assert rejected["order_id"] == "b" and rejected["lines"][0]["available"] == 1
    assert [event["order_id"] for event in published("inventory.reserved.v1")] == ["a", "c", "d"]


def test_a_batch_leaves_decided_orders_and_second_copies_alone(catalogue):
    reserve("seen", ("KB", 1))
    outcomes = reserve_many(("seen", [("KB", 1)]), ("new", [("KB", 2)]), ("new", [("KB", 2)]))
    assert outcomes == {"new": "reserved"}
    assert stock("KB") == 7
    assert len(published("inventory.reserved.v1")) == 2


def test_a_batch_costs_the_same_statements_whatever_its_size(catalogue):
    def statements(orders: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            reserve_many(*((f"o-{orders}-{i}", [("KB", 1)]) for i in range(orders)))
        return len(queries)

    product_ensure(sku="KB", name="KB", price=Decimal("9.99"), stock_on_hand=10)
    Product.objects.filter(sku="KB").update(stock_on_hand=1000)
    assert statements(1) == statements(50)
