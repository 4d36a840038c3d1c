"""Reads other apps may make of payments (in-process, never through the tables)."""

from .models import Payment


def payment_for_order(order_id: str) -> Payment | None:
    """The order's payment (there is at most one), if payments has heard of the order."""
    return Payment.objects.filter(order_id=order_id).first()
