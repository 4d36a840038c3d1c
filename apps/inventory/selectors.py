"""Reads other apps may make of inventory (in-process, never through the tables)."""

from collections.abc import Iterable
from decimal import Decimal

from django.db.models import QuerySet

from .models import Product, Reservation, StockDecision


def product_prices(skus: list[str]) -> dict[str, Decimal]:
    """SKU -> current price, for the SKUs that exist."""
    return dict(Product.objects.filter(sku__in=skus).values_list("sku", "price"))


def stock_decision_for_order(order_id: str) -> StockDecision | None:
    """What inventory decided for the order, if it has heard of it."""
    return StockDecision.objects.filter(order_id=order_id).first()


def reservations_for_order(order_id: str) -> list[Reservation]:
    """The order's reservations (held and released), with their products, in SKU order."""
    return list(Reservation.objects.filter(order_id=order_id).select_related("product").order_by("product__sku"))


def product_list() -> QuerySet[Product]:
    """The catalogue in SKU order; ``stock_on_hand`` is what is left to sell (reservations are taken off)."""
    return Product.objects.order_by("sku")


def product_get(*, sku: str) -> Product | None:
    if "\x00" in sku:
        return None  # PostgreSQL text cannot hold it, so no SKU has it
    return Product.objects.filter(sku=sku).first()


def stock_decisions_for_orders(order_ids: Iterable[str]) -> dict[str, StockDecision]:
    """Order id -> what inventory decided for it, for the orders inventory has heard of: one
    query however many orders (a page of stuck orders reads them at once)."""
    return {decision.order_id: decision for decision in StockDecision.objects.filter(order_id__in=set(order_ids))}
