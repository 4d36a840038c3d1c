from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.producing.reconciliation import outbox_reconcile, reconciliation_runs_prune

CHUNK = 5000


def _delete_in_chunks(queryset) -> int:
    deleted = 0
    while ids := list(queryset.values_list("id", flat=True)[:CHUNK]):
        deleted += queryset.model.objects.filter(id__in=ids).delete()[0]
    return deleted


@shared_task(name="eventbus.prune_outbox")
def prune_outbox() -> int:
    """Delete published outbox rows older than the retention (they live on in the streams).

    Walks the primary key in chunks from the oldest row and stops at the first chunk
    created after the cutoff, so it needs no index on ``sent_at``.
    """
    cutoff = timezone.now() - timedelta(days=settings.EVENTBUS["OUTBOX_RETENTION_DAYS"])
    deleted, after = 0, 0
    while True:
        chunk = list(OutboxEvent.objects.filter(id__gt=after).order_by("id").values_list("id", "created_at")[:CHUNK])
        if not chunk:
            return deleted
        ids = [pk for pk, _ in chunk]
        deleted += OutboxEvent.objects.filter(id__in=ids, sent_at__lt=cutoff).delete()[0]
        if chunk[-1][1] >= cutoff:
            return deleted
        after = ids[-1]


@shared_task(name="eventbus.prune_ledger")
def prune_ledger() -> int:
    """Forget processed-message ids older than the retention, far beyond any redelivery window."""
    cutoff = timezone.now() - timedelta(days=settings.EVENTBUS["LEDGER_RETENTION_DAYS"])
    return _delete_in_chunks(ProcessedMessage.objects.filter(processed_at__lt=cutoff))


@shared_task(name="eventbus.reconcile_outbox")
def reconcile_outbox(run_id: int | None = None) -> dict:
    """Compare the sent outbox rows of the window with the streams and republish what they lost
    (``producing/reconciliation.py``): on the beat schedule (``run_id`` None) and when an operator
    asks (the queued run's id). Then forget runs past their history."""
    run = outbox_reconcile(run_id=run_id)
    reconciliation_runs_prune()
    return {
        "run": run.pk, "status": run.status, "checked": run.checked, "missing": run.missing,
        "republished": run.republished, "failed": run.failed,
    }  # fmt: skip
