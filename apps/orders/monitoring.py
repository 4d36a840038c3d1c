"""The saga's health gauges, refreshed by the ``orders`` consumer's runner (``ConsumerSpec.gauges``).

Why there: the orders consumer is the saga, it runs wherever orders are processed and already
serves ``/metrics``; a Celery beat task would set the gauges in a prefork child of the worker,
which serves no metrics. Every replica reports the same figures: aggregate with ``max``.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client import Gauge

from .models import Order
from .stuck import Step

ORDERS_STUCK = Gauge(
    "orders_stuck",
    "PENDING orders older than ORDERS_STUCK_AFTER_SECONDS (default 300): the saga never decided them",
)
ORDERS_STUCK_WAITING = Gauge(
    "orders_stuck_waiting",
    "Stuck orders (orders_stuck) by the step they have not heard from: payments, inventory, or orders "
    "(both heard, no decision); an order waiting on payments and inventory counts under each",
    ["waiting_on"],
)
PENDING_OLDEST_AGE = Gauge("orders_pending_oldest_age_seconds", "Age of the oldest PENDING order (0: none)")

# What the order has heard decides what it waits on (apps/orders/stuck.py says the same per order).
_NOT_HEARD = {
    Step.PAYMENTS: Q(payment_state=Order.PaymentState.UNKNOWN),
    Step.INVENTORY: Q(stock_state=Order.StockState.UNKNOWN),
    Step.ORDERS: ~Q(payment_state=Order.PaymentState.UNKNOWN) & ~Q(stock_state=Order.StockState.UNKNOWN),
}


def refresh_gauges() -> None:
    """One query, through the partial index on PENDING orders (``orders_pending_created``)."""
    now = timezone.now()
    stuck = Q(created_at__lt=now - timedelta(seconds=settings.ORDERS_STUCK_AFTER_SECONDS))
    stats = Order.objects.filter(status=Order.Status.PENDING).aggregate(
        stuck=Count("pk", filter=stuck),
        oldest=Min("created_at"),
        **{f"waiting_{step}": Count("pk", filter=stuck & not_heard) for step, not_heard in _NOT_HEARD.items()},
    )
    ORDERS_STUCK.set(stats["stuck"])
    for step in _NOT_HEARD:
        ORDERS_STUCK_WAITING.labels(step.value).set(stats[f"waiting_{step}"])
    PENDING_OLDEST_AGE.set((now - stats["oldest"]).total_seconds() if stats["oldest"] else 0)
