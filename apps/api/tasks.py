from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .models import IdempotencyKey

CHUNK = 5000


@shared_task(name="api.prune_idempotency_keys")
def prune_idempotency_keys() -> int:
    """Forget Idempotency-Key records older than the retention (24 hours at least), in chunks."""
    cutoff = timezone.now() - timedelta(hours=settings.API["IDEMPOTENCY_KEY_RETENTION_HOURS"])
    expired = IdempotencyKey.objects.filter(created_at__lt=cutoff)
    deleted = 0
    while ids := list(expired.values_list("id", flat=True)[:CHUNK]):
        deleted += IdempotencyKey.objects.filter(id__in=ids).delete()[0]
    return deleted
