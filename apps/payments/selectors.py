"""Reads of payments."""

from __future__ import annotations

from .models import Payment


def payment_for_order(*, order_id: str) -> Payment | None:
    """The order's payment (pending, captured, failed or refunded), or None before payments saw the order."""
    return Payment.objects.filter(order_id=order_id).first()
