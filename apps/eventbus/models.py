from django.conf import settings
from django.db import models
from django.db.models import Q


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it reports; the relay publishes it."""

    message_id = models.CharField(max_length=100, unique=True)
    subject = models.CharField(max_length=200)
    # Events of one aggregate (an order) are published in the order they were written.
    aggregate_id = models.CharField(max_length=100)
    body = models.TextField(help_text="The message body exactly as it goes on the wire (JSON)")
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    stream_sequence = models.BigIntegerField(null=True, blank=True)
    # A relay publishing the row holds it until then (no transaction stays open meanwhile).
    leased_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        # No index on sent_at itself: marking a row sent then writes one fewer index entry.
        # Pruning walks the primary key instead (rows are created, and sent, in id order).
        indexes = [
            models.Index(fields=["id"], condition=Q(sent_at__isnull=True), name="outbox_unsent_idx"),
            models.Index(
                fields=["aggregate_id", "id"], condition=Q(sent_at__isnull=True), name="outbox_unsent_aggregate_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} {self.message_id}"


class ProcessedMessage(models.Model):
    """The idempotency ledger: a consumer has applied this message's effects (same transaction)."""

    consumer = models.CharField(max_length=100)
    message_id = models.CharField(max_length=100)  # the ledger key (Delivery.ledger_key; see headers.py)
    subject = models.CharField(max_length=200)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "message_id"], name="ledger_once_per_consumer")]
        indexes = [models.Index(fields=["processed_at"], name="ledger_processed_at_idx")]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.message_id}"


class DeadLetter(models.Model):
    """A message one consumer could not handle, kept for review and reprocessing."""

    class Status(models.TextChoices):
        PENDING = "pending"
        REPROCESSING = "reprocessing"
        RESOLVED = "resolved"
        FAILED_AGAIN = "failed_again", "Failed again"
        DISCARDED = "discarded"

    consumer = models.CharField(max_length=100)
    stream = models.CharField(max_length=100)
    subject = models.CharField(max_length=200)
    stream_sequence = models.BigIntegerField()
    message_id = models.CharField(max_length=100, blank=True)  # the failed message's ledger key
    correlation_id = models.CharField(max_length=100, blank=True)
    data = models.TextField(help_text="The original message body, as received (escaped when raw_data is set)")
    raw_data = models.BinaryField(
        null=True,
        blank=True,
        editable=False,
        help_text="The original body's exact bytes when data cannot hold them (not UTF-8, or NUL characters)",
    )
    size = models.PositiveIntegerField(default=0, help_text="The original body's size in bytes")
    edited_data = models.TextField(blank=True, help_text="An operator's correction, delivered instead of data")
    headers = models.JSONField(default=dict, help_text="The original message's headers")
    error_type = models.CharField(max_length=200)
    error = models.TextField()
    traceback = models.TextField(blank=True, help_text="Where the handler failed (empty for a message refused before)")
    # The group of its (latest) failure: deadletters/fingerprint.py, set with every failure recorded.
    fingerprint = models.CharField(
        max_length=64, blank=True, default="", help_text="SHA-256 of consumer, subject, error type, signature, frame"
    )
    error_signature = models.CharField(
        max_length=500, blank=True, default="", help_text="The error with its variable parts as placeholders"
    )
    error_frame = models.CharField(
        max_length=300, blank=True, default="", help_text="Where it was raised (file:function)"
    )
    attempts = models.PositiveIntegerField()
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    failures = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "stream", "stream_sequence"], name="dead_letter_once_per_message"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-last_failed_at"], name="dead_letter_status_idx"),
            models.Index(fields=["consumer", "-last_failed_at"], name="dead_letter_consumer_idx"),
            models.Index(fields=["correlation_id"], name="dead_letter_correlation_idx"),
            models.Index(fields=["message_id"], name="dead_letter_message_idx"),
            models.Index(fields=["-last_failed_at", "-id"], name="dead_letter_recent_idx"),
            # A group's rows (its page, its actions) and the groups query's semi-join.
            models.Index(fields=["fingerprint", "status"], name="dead_letter_fingerprint_idx"),
        ]
        ordering = ["-last_failed_at", "-id"]
        permissions = [
            ("reprocess_deadletter", "Can reprocess (and edit before reprocessing) dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer} {self.subject} #{self.stream_sequence}"


class DeadLetterBody(models.Model):
    """A dead letter's body that could not travel again with its dead-letter headers (the
    server's max_payload counts both): the runner keeps it here, keyed by the dead letter's
    identity, before publishing the dead letter without it; the dead-letters consumer moves it
    into the DeadLetter row it records."""

    consumer = models.CharField(max_length=100)
    stream = models.CharField(max_length=100)
    stream_sequence = models.BigIntegerField()
    body = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "stream", "stream_sequence"], name="dead_letter_body_once_per_message"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consumer} {self.stream} #{self.stream_sequence} ({len(self.body)} bytes)"


class DeadLetterEvent(models.Model):
    """Everything that happened to a dead letter: each failure and each operator action."""

    class Kind(models.TextChoices):
        FAILED = "failed"
        EDITED = "edited"
        REPROCESS_REQUESTED = "reprocess_requested", "Reprocess requested"
        RESOLVED = "resolved"
        DISCARDED = "discarded"

    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="history")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    note = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class OutboxDeadLetter(models.Model):
    """An outbox row JetStream can never accept as it is (no stream captures its subject, too
    large for the server, a header it refuses), set aside by the relay so that nothing waits
    behind it. An operator requeues a copy (after the cause is fixed) or discards it."""

    class Status(models.TextChoices):
        REFUSED = "refused"
        REQUEUED = "requeued"
        DISCARDED = "discarded"

    outbox_id = models.BigIntegerField(help_text="The id the row had in the outbox")
    message_id = models.CharField(max_length=100)
    subject = models.CharField(max_length=200)
    aggregate_id = models.CharField(max_length=100)
    body = models.TextField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(help_text="When the event was written to the outbox")
    refused_at = models.DateTimeField()
    reason = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.REFUSED)
    status_changed_at = models.DateTimeField()
    note = models.TextField(blank=True, help_text="Who requeued or discarded it, and why")

    class Meta:
        ordering = ["-refused_at", "-id"]
        indexes = [models.Index(fields=["status", "-refused_at"], name="outbox_dead_letter_status_idx")]
        permissions = [("requeue_outboxdeadletter", "Can requeue or discard events the relay set aside")]

    def __str__(self) -> str:
        return f"{self.subject} {self.message_id}"


class ReconciliationRun(models.Model):
    """One comparison of the outbox rows marked sent with what the streams hold, and the
    republishing of what they lost (``producing/reconciliation.py``). Kept for the cockpit and
    the metrics; written only by that module."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"  # the run itself could not go on (NATS unreachable): see error
        SKIPPED = "skipped"  # another run held the lock

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The operator who asked for it; empty: the schedule",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    window_start = models.DateTimeField(null=True, blank=True, help_text="Rows written from")
    window_end = models.DateTimeField(null=True, blank=True, help_text="Rows sent until (now minus the settle delay)")
    first_id = models.BigIntegerField(null=True, blank=True, help_text="The first outbox row checked")
    last_id = models.BigIntegerField(null=True, blank=True, help_text="The last outbox row checked")
    complete = models.BooleanField(
        default=False, help_text="The walk reached the end of the window (else the next run goes on from last_id)"
    )
    checked = models.PositiveIntegerField(default=0)
    missing = models.PositiveIntegerField(default=0)
    republished = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    republished_ids = models.JSONField(default=list, blank=True, help_text="Message ids republished (the first 100)")
    error = models.TextField(blank=True, help_text="Why the run or some of its rows failed (bounded)")

    class Meta:
        ordering = ["-id"]
        permissions = [("run_reconciliation", "Can run the outbox reconciliation now")]

    def __str__(self) -> str:
        return f"reconciliation #{self.pk} ({self.status})"
