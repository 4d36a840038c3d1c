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

ORDERS_STUCK = Gauge(
    "orders_stuck",
    "PENDING orders older than ORDERS_STUCK_AFTER_SECONDS (default 300): the saga never decided them",
)
PENDING_OLDEST_AGE = Gauge("orders_pending_oldest_age_seconds", "Age of the oldest PENDING order (0: none)")


def refresh_gauges() -> None:
    """One query, through the partial index on PENDING orders (``orders_pending_created``)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.ORDERS_STUCK_AFTER_SECONDS)
    stats = Order.objects.filter(status=Order.Status.PENDING).aggregate(
        stuck=Count("pk", filter=Q(created_at__lt=cutoff)), oldest=Min("created_at")
    )
    ORDERS_STUCK.set(stats["stuck"])
    PENDING_OLDEST_AGE.set((now - stats["oldest"]).total_seconds() if stats["oldest"] else 0)
