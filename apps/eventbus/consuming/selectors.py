"""Reads of the consumers' own state for the operator's views."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from apps.eventbus.models import ProcessedMessage


def processing_rates(window: timedelta = timedelta(seconds=60)) -> dict[str, float]:
    """Messages handled per second over the last ``window``, per consumer, from the ledger
    (one row per handled message, written in the handler's transaction)."""
    since = timezone.now() - window
    rows = (
        ProcessedMessage.objects.filter(processed_at__gte=since)
        .values("consumer")
        .annotate(count=Count("id"))
        .order_by()
    )
    return {row["consumer"]: row["count"] / window.total_seconds() for row in rows}
