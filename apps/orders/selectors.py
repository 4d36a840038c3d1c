"""Reads of orders. A customer's reads are always scoped to that customer."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import QuerySet

from .models import Order


def order_list(
    *,
    customer_id: str,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Order]:
    """The customer's orders, newest first, with their lines."""
    orders = Order.objects.filter(customer_id=customer_id)
    if status:
        orders = orders.filter(status=status)
    if created_after is not None:
        orders = orders.filter(created_at__gte=created_after)
    if created_before is not None:
        orders = orders.filter(created_at__lt=created_before)
    return orders.prefetch_related("lines").order_by("-created_at", "-id")


def order_get(*, customer_id: str, order_id: str) -> Order | None:
    """The customer's order with its lines, or None: another customer's order is as absent as
    one that does not exist (the caller cannot tell them apart)."""
    pk = _pk(order_id)
    if pk is None:
        return None
    return Order.objects.filter(pk=pk, customer_id=customer_id).prefetch_related("lines").first()


def order_exists(*, order_id: str) -> bool:
    """Whether ``order_id`` (any text: a correlation id, say) is an order of this platform."""
    pk = _pk(order_id)
    return pk is not None and Order.objects.filter(pk=pk).exists()


def _pk(order_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(order_id))
    except ValueError:
        return None
