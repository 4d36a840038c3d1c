"""Dead letters as the operator's views (admin, API) read them."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, QuerySet

from apps.eventbus.models import DeadLetter

NEEDS_ATTENTION = (DeadLetter.Status.PENDING, DeadLetter.Status.FAILED_AGAIN)


def dead_letters_open_by_consumer() -> dict[str, int]:
    """Dead letters waiting for an operator (pending or failed again), per consumer."""
    rows = (
        DeadLetter.objects.filter(status__in=NEEDS_ATTENTION).values("consumer").annotate(count=Count("id")).order_by()
    )
    return {row["consumer"]: row["count"] for row in rows}


def dead_letter_list(
    *,
    consumer: str | None = None,
    subject: str | None = None,
    error_type: str | None = None,
    status: str | None = None,
    failed_after: datetime | None = None,
    failed_before: datetime | None = None,
    search: str | None = None,
) -> QuerySet[DeadLetter]:
    """Dead letters, most recent failure first; ``search`` is an order id (correlation id) or a message id."""
    dead_letters = DeadLetter.objects.all()
    for name, value in (("consumer", consumer), ("subject", subject), ("error_type", error_type), ("status", status)):
        if value:
            dead_letters = dead_letters.filter(**{name: value})
    if failed_after is not None:
        dead_letters = dead_letters.filter(last_failed_at__gte=failed_after)
    if failed_before is not None:
        dead_letters = dead_letters.filter(last_failed_at__lt=failed_before)
    if search:
        dead_letters = dead_letters.filter(Q(correlation_id=search) | Q(message_id=search))
    return dead_letters.order_by("-last_failed_at", "-id")


def dead_letter_get(*, dead_letter_id: str) -> DeadLetter | None:
    """The dead letter with its history (and who acted), or None."""
    pk = str(dead_letter_id)
    if not pk.isascii() or not pk.isdigit() or not 0 < int(pk) < 2**63:
        return None
    return DeadLetter.objects.filter(pk=int(pk)).prefetch_related("history__actor").first()
