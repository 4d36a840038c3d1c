from django.conf import settings
from django.db import models


class IdempotencyKey(models.Model):
    """One ``Idempotency-Key`` a user sent with a POST, and the response it got.

    Inserted first, in the transaction that does the POST's work, so the unique constraint
    makes a concurrent request with the same key wait for that transaction, then replay what
    it committed; a failed request rolls the row back with everything else.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and JSON body")
    response_status = models.PositiveSmallIntegerField(null=True)
    # JSON text, not jsonb: a replay must give the first response's keys in their order.
    response_body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_once_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.key}"
