"""The whole saga through real processes: the gateway simulator, the relay, and the
inventory, payments and orders consumers. Every order ends CONFIRMED or CANCELLED, is
charged at most once for exactly its total, and refunded exactly once if cancelled."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from apps.audit.selectors import order_timeline
from apps.eventbus.models import DeadLetter
from apps.inventory.models import Product
from apps.inventory.services import product_ensure
from apps.orders.models import Order
from apps.orders.services import order_cancel, order_place
from apps.payments import gateway as gateway_client
from apps.payments.models import Payment
from orders_platform.embedded.procs import wait_until
from tests.bus import final, stop_process, wait_for
from tests.gateway import Gateway, charges

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(bus, settings, tmp_path):
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=100)
    product_ensure(sku="LAST", name="Last one", price=Decimal("10.00"), stock_on_hand=1)
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    settings.PAYMENT_GATEWAY_URL = gateway.url
    with bus.running("inventory", "payments", "orders"):
        yield gateway
    gateway.stop()


def test_a_paid_and_reserved_order_is_confirmed_and_charged_once_for_its_total(platform):
    order = order_place(customer_id="c", lines=[("KB", 2)])
    assert final(order) == "CONFIRMED"
    (charge,) = charges(platform, order.pk)
    assert charge["status"] == "succeeded" and Decimal(charge["amount"]) == Decimal("179.80")
    assert Payment.objects.get(order_id=str(order.pk)).status == "CAPTURED"


def test_a_declined_payment_cancels_the_order_and_releases_its_stock(platform):
    platform.control(decline_rate=1.0)
    order = order_place(customer_id="c", lines=[("KB", 3)])
    assert final(order) == "CANCELLED"
    assert "payment failed: declined: card_declined" in Order.objects.get(pk=order.pk).cancel_reason
    wait_for(lambda: Product.objects.get(sku="KB").stock_on_hand == 100, timeout=30)


def test_an_order_out_of_stock_is_cancelled_and_its_charge_refunded_exactly_once(platform):
    first = order_place(customer_id="c", lines=[("LAST", 1)])
    second = order_place(customer_id="c", lines=[("LAST", 1)])
    assert {final(first), final(second)} == {"CONFIRMED", "CANCELLED"}
    cancelled = first if Order.objects.get(pk=first.pk).status == "CANCELLED" else second
    wait_for(lambda: Payment.objects.get(order_id=str(cancelled.pk)).status == "REFUNDED", timeout=30)
    (charge,) = charges(platform, cancelled.pk)
    assert charge["amount_refunded"] == charge["amount"] == "10.00"
    # The order says so too (it used to read "captured" for ever): the orders consumer hears the refund.
    wait_for(lambda: Order.objects.get(pk=cancelled.pk).payment_state == "refunded", timeout=30)
    assert Order.objects.get(pk=cancelled.pk).stock_state == "rejected"


def test_orders_are_accepted_during_a_gateway_outage_and_charged_after_it(platform):
    platform.control(outage=True)
    order = order_place(customer_id="c", lines=[("KB", 1)])
    time.sleep(3)
    assert Order.objects.get(pk=order.pk).status == "PENDING", "accepted, waiting for its payment"
    assert charges(platform, order.pk) == []
    platform.control(outage=False)
    assert final(order, timeout=60) == "CONFIRMED"
    assert len(charges(platform, order.pk)) == 1


def test_exactly_once_billing_when_payments_dies_between_the_charge_and_its_commit(bus, settings, tmp_path):
    """Each order kills the payments process once, right after the gateway charged it and
    before the transaction commits; restarted, it asks again with the same key."""
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=100)
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    settings.PAYMENT_GATEWAY_URL = gateway.url
    orders = [order_place(customer_id="c", lines=[("KB", n)]) for n in range(1, 6)]
    markers = tmp_path / "failpoints"
    markers.mkdir()
    env = {
        "PAYMENT_GATEWAY_URL": gateway.url,
        "PLATFORM_FAILPOINTS": "payments.after_charge",
        "PLATFORM_FAILPOINT_DIR": str(markers),
        "EVENTBUS_ACK_WAIT_SECONDS": "2",
    }
    kills = 0
    try:
        with bus.relay(), bus.consumer("inventory"), bus.consumer("orders"):
            deadline = time.monotonic() + 120
            while Order.objects.filter(status="PENDING").exists() and time.monotonic() < deadline:
                process = bus.consumer_process("payments", "--batch", "3", env=env)
                wait_until(
                    lambda p=process: p.poll() is not None or not Order.objects.filter(status="PENDING").exists(),
                    timeout=30,
                )
                code = process.poll() if process.poll() is not None else stop_process(process)
                kills += code == 137
            wait_for(lambda: not Order.objects.filter(status="PENDING").exists(), timeout=30)
        assert kills == 5, "one kill per order, between its charge and the commit"
        for order in orders:
            order.refresh_from_db()
            assert order.status == "CONFIRMED"
            (charge,) = charges(gateway, order.pk)  # the same key again: the gateway answered the first charge
            assert Decimal(charge["amount"]) == order.total_amount
            assert Payment.objects.get(order_id=str(order.pk)).gateway_charge_id == charge["id"]
    finally:
        gateway.stop()


@pytest.fixture
def quick_breaker(settings):
    settings.PAYMENT_GATEWAY_BREAKER = {"THRESHOLD": 2, "PAUSE": 2, "MAX_PAUSE": 4}
    gateway_client.breaker.cache_clear()
    yield
    gateway_client.breaker.cache_clear()


def test_the_circuit_breaker_pauses_payments_during_an_outage_and_resumes_after_it(platform, bus, quick_breaker):
    platform.control(outage=True)
    orders = [order_place(customer_id="c", lines=[("KB", 1)]) for _ in range(5)]
    wait_for(lambda: bus.consumer_info("ORDERS", "payments").paused, timeout=30)
    assert Order.objects.filter(status="PENDING").count() == 5, "orders are accepted meanwhile"
    assert bus.stream_messages("DLQ") == 0 and not DeadLetter.objects.exists()
    platform.control(outage=False)
    for order in orders:
        assert final(order, timeout=60) == "CONFIRMED"
        assert len(charges(platform, order.pk)) == 1
    assert bus.stream_messages("DLQ") == 0


def test_the_minimal_external_order_form_is_charged_exactly_its_total(platform, bus):
    """Another producer's orders.created.v1: total as a JSON number, no currency, no lines."""
    bus.publish(
        "orders.created.v1",
        b'{"message_id": "ext-9", "order_id": "ext-order-9", "customer_id": "x", "total_amount": 99.95, '
        b'"created_at": 1764000000000}',
        msg_id="ext-9",
    )
    wait_for(lambda: Payment.objects.filter(order_id="ext-order-9", status="CAPTURED").exists(), timeout=30)
    payment = Payment.objects.get(order_id="ext-order-9")
    assert payment.amount == Decimal("99.95") and payment.currency == "EUR"
    (charge,) = platform.call("GET", "/v1/charges?reference=ext-order-9")[1]["data"]
    assert charge["amount"] == "99.95"


def test_a_customer_cancellation_of_a_confirmed_order_refunds_and_releases_once(platform):
    order = order_place(customer_id="c", lines=[("KB", 4)])
    assert final(order) == "CONFIRMED"
    assert Product.objects.get(sku="KB").stock_on_hand == 96
    order_cancel(order_id=str(order.pk), reason="changed my mind")
    wait_for(lambda: Payment.objects.get(order_id=str(order.pk)).status == "REFUNDED", timeout=30)
    wait_for(lambda: Product.objects.get(sku="KB").stock_on_hand == 100, timeout=30)
    (charge,) = charges(platform, order.pk)
    assert charge["amount_refunded"] == charge["amount"] == "359.60"


def test_an_operator_cancels_one_confirmed_order_and_refunds_another_each_refunded_once(platform, client, operator):
    """Through the admin, as an operator would; the orders hear what payments and inventory did."""
    kept, returned = (order_place(customer_id="c", lines=[("KB", 1)]) for _ in range(2))
    assert final(kept) == final(returned) == "CONFIRMED"
    client.force_login(operator)
    client.post(f"/admin/orders/order/{returned.pk}/cancel/", {"reason": "customer returned it"})
    client.post(f"/admin/orders/order/{kept.pk}/refund/", {"reason": "goodwill: arrived late"})
    client.post(f"/admin/orders/order/{kept.pk}/refund/", {"reason": "clicked twice"})  # refused: one refund

    def settled(order) -> tuple[str, str, str]:
        order.refresh_from_db()
        return order.status, order.payment_state, order.stock_state

    wait_for(lambda: settled(returned) == ("CANCELLED", "refunded", "released"), timeout=30)
    wait_for(lambda: settled(kept) == ("CONFIRMED", "refunded", "reserved"), timeout=30)
    assert Product.objects.get(sku="KB").stock_on_hand == 99, "the refunded order keeps its goods"
    for order in (kept, returned):
        (charge,) = charges(platform, order.pk)
        assert charge["amount_refunded"] == charge["amount"] == "89.90"
        assert Payment.objects.get(order_id=str(order.pk)).status == "REFUNDED"


def test_an_orders_timeline_lists_its_events_in_order(platform, bus):
    order = order_place(customer_id="c", lines=[("KB", 1)])
    assert final(order) == "CONFIRMED"
    with bus.consumer("audit"):
        wait_for(lambda: len(order_timeline(str(order.pk))) == 4, timeout=30)
    subjects = [event["subject"] for event in order_timeline(str(order.pk))]
    assert subjects[0] == "orders.created.v1" and subjects[-1] == "orders.confirmed.v1"
    assert sorted(subjects[1:3]) == ["inventory.reserved.v1", "payments.completed.v1"]


def test_a_slow_provider_charges_a_batch_of_orders_concurrently(bus, settings, tmp_path):
    """20 orders wait for payments; with the provider at 1 s each, they are charged at once. (At
    300 ms, a loaded 2-core machine once started the last calls after the first had answered:
    12 overlapping. The claim is about overlap, so the provider is slow enough to leave no doubt.)"""
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=100)
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    settings.PAYMENT_GATEWAY_URL = gateway.url
    try:
        gateway.control(latency_ms=1000)
        orders = [order_place(customer_id="c", lines=[("KB", 1)]) for _ in range(20)]
        with bus.relay():
            wait_for(lambda: bus.stream_messages("ORDERS") == 20, timeout=30)
        gateway.call("DELETE", "/_stats")
        with bus.relay(), bus.consumer("inventory"), bus.consumer("orders"), bus.consumer("payments"):
            for order in orders:
                assert final(order, timeout=60) == "CONFIRMED"
        stats = gateway.call("GET", "/_stats")[1]
        assert stats["requests"] == 20, "one charge request per order"
        assert stats["max_in_flight"] >= 15, f"the charges overlapped: {stats}"
        for order in orders:
            assert len(charges(gateway, order.pk)) == 1
    finally:
        gateway.stop()


def test_a_cancellation_during_the_charge_refunds_it_once_the_charge_is_recorded(platform):
    """The charge is in flight (its payment claimed, PENDING) when the customer cancels: the
    refund waits for the charge's answer instead of deciding blind, then refunds it."""
    platform.control(latency_ms=1500)
    order = order_place(customer_id="c", lines=[("KB", 1)])
    wait_for(lambda: Payment.objects.filter(order_id=str(order.pk), status="PENDING").exists(), timeout=30)
    order_cancel(order_id=str(order.pk), reason="changed my mind")
    wait_for(lambda: Payment.objects.get(order_id=str(order.pk)).status == "REFUNDED", timeout=60)
    (charge,) = charges(platform, order.pk)
    assert charge["amount_refunded"] == charge["amount"] == "89.90"
    assert Order.objects.get(pk=order.pk).status == "CANCELLED"
    wait_for(lambda: Product.objects.get(sku="KB").stock_on_hand == 100, timeout=30)


def test_three_payments_replicas_share_the_work_and_charge_each_order_once(bus, settings, tmp_path):
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=1000)
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    settings.PAYMENT_GATEWAY_URL = gateway.url
    replicas = []
    try:
        gateway.control(latency_ms=100)
        env = {"PAYMENT_GATEWAY_URL": gateway.url, "PAYMENT_GATEWAY_CONCURRENCY": "4"}
        replicas = [bus.consumer_process("payments", "--batch", "5", env=env) for _ in range(3)]
        with bus.relay(), bus.consumer("inventory"), bus.consumer("orders"):
            orders = [order_place(customer_id="c", lines=[("KB", 1 + n % 3)]) for n in range(90)]
            wait_for(lambda: not Order.objects.filter(status="PENDING").exists(), timeout=120)
        assert [process.poll() for process in replicas] == [None, None, None], "every replica still running"
        billed = {}
        for charge in gateway.call("GET", "/v1/charges")[1]["data"]:
            billed.setdefault(charge["reference"], []).append(Decimal(charge["amount"]))
        for order in orders:
            order.refresh_from_db()
            assert order.status == "CONFIRMED"
            assert billed[str(order.pk)] == [order.total_amount], "one charge of exactly its total"
    finally:
        for process in replicas:
            stop_process(process)
        gateway.stop()
