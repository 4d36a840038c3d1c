"""Customers place, list, read and cancel their own orders through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.services import audit_append
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.models import OutboxEvent
from apps.inventory.services import stock_reserve
from apps.orders.models import Order
from apps.orders.services import order_place

from .support import client_for

pytestmark = pytest.mark.django_db

ORDER = {"lines": [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-002", "quantity": 1}], "currency": "EUR"}


def test_placing_an_order_prices_it_on_the_server_and_writes_its_event(api, alice, catalogue):
    response = api.post("/api/orders/", ORDER, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["total_amount"] == "214.30"
    assert body["currency"] == "EUR"
    assert body["lines"] == [
        {"sku": "KB-001", "quantity": 2, "unit_price": "89.90"},
        {"sku": "MS-002", "quantity": 1, "unit_price": "34.50"},
    ]
    assert {"id", "created_at"} <= body.keys()
    order = Order.objects.get(pk=body["id"])
    assert order.customer_id == str(alice.pk)
    assert OutboxEvent.objects.filter(subject="orders.created.v1", aggregate_id=body["id"]).count() == 1


@pytest.mark.parametrize("currency", ["CHF", "EUR"])
def test_an_order_without_a_currency_is_in_the_platforms(api, catalogue, settings, currency):
    settings.PLATFORM_CURRENCY = currency

    response = api.post("/api/orders/", {"lines": ORDER["lines"]}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["currency"] == currency
    assert Order.objects.get(pk=response.json()["id"]).currency == currency
    explicit = api.post("/api/orders/", {**ORDER, "currency": currency}, format="json")
    assert explicit.status_code == 201, explicit.json()


def test_the_list_holds_only_the_callers_orders_and_filters_them(api, alice, bob, catalogue):
    mine = [order_place(customer_id=str(alice.pk), lines=[("KB-001", 1)]) for _ in range(3)]
    order_place(customer_id=str(bob.pk), lines=[("KB-001", 1)])
    Order.objects.filter(pk=mine[0].pk).update(
        status=Order.Status.CANCELLED, created_at=timezone.now() - timedelta(days=3)
    )

    everything = api.get("/api/orders/").json()
    assert [o["id"] for o in everything["results"]] == [str(mine[2].id), str(mine[1].id), str(mine[0].id)]
    cancelled = api.get("/api/orders/", {"status": "CANCELLED"}).json()["results"]
    assert [o["id"] for o in cancelled] == [str(mine[0].id)]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    recent = api.get("/api/orders/", {"created_after": since}).json()["results"]
    assert {o["id"] for o in recent} == {str(mine[1].id), str(mine[2].id)}
    older = api.get("/api/orders/", {"created_before": since}).json()["results"]
    assert [o["id"] for o in older] == [str(mine[0].id)]


def test_the_list_pages_with_a_cursor(api, alice, catalogue):
    for _ in range(5):
        order_place(customer_id=str(alice.pk), lines=[("KB-001", 1)])
    seen, url = [], "/api/orders/?page_size=2"
    while url:
        page = api.get(url).json()
        assert len(page["results"]) <= 2
        seen += [o["id"] for o in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 5


def test_a_bad_filter_is_a_400(api):
    response = api.get("/api/orders/", {"status": "SHIPPED", "created_after": "yesterday"})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"status", "created_after"}


def test_an_order_shows_payment_reservation_and_its_timeline(api, alice, catalogue):
    order = order_place(customer_id=str(alice.pk), lines=[("KB-001", 2)])
    stock_reserve(order_id=str(order.id), lines=[("KB-001", 2)])
    deliveries = [
        Delivery(
            stream="ORDERS", delivery_subject=row.subject, data=row.body.encode(), headers=row.headers,
            stream_sequence=sequence, num_delivered=1,
        )
        for sequence, row in enumerate(OutboxEvent.objects.order_by("id"), start=1)
    ]  # fmt: skip
    audit_append(deliveries=deliveries)  # what the audit consumer does with the published events

    body = api.get(f"/api/orders/{order.id}/").json()

    assert body["status"] == "PENDING"
    assert body["payment_status"] == "PENDING"
    assert body["reservation_status"] == "RESERVED"
    assert [event["subject"] for event in body["timeline"]] == ["orders.created.v1", "inventory.reserved.v1"]
    assert body["timeline"][0]["payload"]["order_id"] == str(order.id)


def test_a_customer_cancels_an_order_once(api, alice, catalogue):
    order = order_place(customer_id=str(alice.pk), lines=[("KB-001", 1)])

    response = api.post(f"/api/orders/{order.id}/cancel/", {"reason": "changed my mind"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert response.json()["cancel_reason"] == "changed my mind"
    assert OutboxEvent.objects.filter(subject="orders.cancelled.v1").count() == 1

    again = api.post(f"/api/orders/{order.id}/cancel/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"
    assert OutboxEvent.objects.filter(subject="orders.cancelled.v1").count() == 1


def test_a_customer_probing_other_order_ids_gets_only_404s(alice, bob, catalogue):
    others = [str(order_place(customer_id=str(bob.pk), lines=[("KB-001", 1)]).id) for _ in range(10)]
    probes = others + [f"00000000-0000-4000-8000-{n:012d}" for n in range(990)]
    api = client_for(alice)
    statuses = set()
    for order_id in probes:
        statuses.add(api.get(f"/api/orders/{order_id}/").status_code)
    for order_id in others:
        response = api.post(f"/api/orders/{order_id}/cancel/")
        statuses.add(response.status_code)
        assert response.json() == {"error": {"code": "not_found", "message": "Not found.", "fields": {}}}
    assert len(probes) == 1000
    assert statuses == {404}
    assert not Order.objects.filter(status=Order.Status.CANCELLED).exists()
    assert api.get("/api/orders/").json()["results"] == []


def test_products_show_price_and_available_stock(api, catalogue):
    listing = api.get("/api/products/").json()
    assert listing["count"] == 2
    assert listing["results"][0] == {
        "sku": "KB-001", "name": "Keyboard", "price": "89.90", "currency": "EUR", "available": 100,
    }  # fmt: skip
    assert api.get("/api/products/MS-002/").json()["available"] == 200
    missing = api.get("/api/products/NOPE/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
