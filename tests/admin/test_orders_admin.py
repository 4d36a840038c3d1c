"""The admin shows orders (with their timeline), payments, stock and decisions, read-only."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from apps.inventory.services import product_ensure, stock_reserve
from apps.orders.services import order_place

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


def test_the_admin_pages_render_and_offer_no_editing(operator_client):
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=3)
    order = order_place(customer_id="c", lines=[("KB", 1)])
    stock_reserve(order_id="other", lines=[("NOPE", 1)])
    for url in (
        "/admin/orders/order/", f"/admin/orders/order/{order.pk}/change/", "/admin/payments/payment/",
        "/admin/inventory/product/?stock=low", "/admin/inventory/stockdecision/?outcome=rejected",
        "/admin/inventory/reservation/", "/admin/audit/auditentry/",
    ):  # fmt: skip
        response = operator_client.get(url)
        assert response.status_code == 200, url
    detail = operator_client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "Timeline (from the audit log)" in detail and "no events recorded yet" in detail
    assert "Save" not in detail
    low = operator_client.get("/admin/inventory/product/?stock=low").content.decode()
    assert "KB" in low
    rejected = operator_client.get("/admin/inventory/stockdecision/?outcome=rejected").content.decode()
    assert "other" in rejected
    assert operator_client.get("/admin/orders/order/add/").status_code == 403
