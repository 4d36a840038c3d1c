from django.db import models


class AuditEntry(models.Model):
    """One event of any stream, as received. Append-only: PostgreSQL refuses UPDATE and DELETE
    on this table (trigger in the migration). Each entry hashes its content and the previous
    entry's hash, so an edit anywhere breaks the chain from there on."""

    subject = models.CharField(max_length=200)
    message_id = models.CharField(max_length=100)  # unique: see Meta.constraints
    correlation_id = models.CharField(max_length=100, blank=True)  # indexed: see Meta.indexes
    stream = models.CharField(max_length=100)
    stream_sequence = models.BigIntegerField()
    body = models.TextField(help_text="The message body exactly as received")
    headers = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)  # unique: see Meta.constraints

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "audit entries"
        # Declared here rather than with unique=True/db_index=True on the fields, which on
        # PostgreSQL add a second, varchar_pattern_ops index per column for LIKE 'prefix%'
        # lookups that nothing makes (ids and hashes are looked up whole): those three extra
        # random-key indexes cost the consumer a fifth of each batch's insert (migration 0003).
        constraints = [
            models.UniqueConstraint(fields=["message_id"], name="audit_auditentry_message_id_key"),
            models.UniqueConstraint(fields=["hash"], name="audit_auditentry_hash_key"),
        ]
        indexes = [models.Index(fields=["correlation_id"], name="audit_entry_correlation_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject} {self.message_id}"
