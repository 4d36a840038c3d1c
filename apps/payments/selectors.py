"""Reads other apps may make of payments (in-process, never through the tables)."""

from collections.abc import Iterable

from .models import Payment


def payment_for_order(order_id: str) -> Payment | None:
    """The order's payment (there is at most one), if payments has heard of the order."""
    return Payment.objects.filter(order_id=order_id).first()


def payments_for_orders(order_ids: Iterable[str]) -> dict[str, Payment]:
    """Order id -> its payment, for the orders payments has heard of: one query however many
    orders (a page of stuck orders reads them at once)."""
    return {payment.order_id: payment for payment in Payment.objects.filter(order_id__in=set(order_ids))}
