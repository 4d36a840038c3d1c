"""Reads for the operator's views (admin, API)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from .models import DeadLetter, ProcessedMessage

NEEDS_ATTENTION = (DeadLetter.Status.PENDING, DeadLetter.Status.FAILED_AGAIN)


def dead_letters_open_by_consumer() -> dict[str, int]:
    """Dead letters waiting for an operator (pending or failed again), per consumer."""
    rows = (
        DeadLetter.objects.filter(status__in=NEEDS_ATTENTION).values("consumer").annotate(count=Count("id")).order_by()
    )
    return {row["consumer"]: row["count"] for row in rows}


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
