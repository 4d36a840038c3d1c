from django.db import models


class AuditEntry(models.Model):
    """One event of any stream, as received. Append-only: PostgreSQL refuses UPDATE and DELETE
    on this table (trigger in the migration). Each entry hashes its content and the previous
    entry's hash, so an edit anywhere breaks the chain from there on."""

    subject = models.CharField(max_length=200)
    message_id = models.CharField(max_length=100, unique=True)
    correlation_id = models.CharField(max_length=100, blank=True, db_index=True)
    stream = models.CharField(max_length=100)
    stream_sequence = models.BigIntegerField()
    body = models.TextField(help_text="The message body exactly as received")
    headers = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject} {self.message_id}"
