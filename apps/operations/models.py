from django.conf import settings
from django.db import models


class Consumer(models.Model):
    """Not a table: the consumers and streams page reads their live state from NATS. The
    model gives that page its place in the admin and its permissions."""

    name = models.CharField(max_length=100, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("pause_consumer", "Can pause and resume consumers")]
        verbose_name = "consumer and stream health"
        verbose_name_plural = "consumers and streams"

    def __str__(self) -> str:
        return self.name


class BulkReprocess(models.Model):
    """Reprocessing many dead letters of one consumer, at a bounded rate, by a Celery task.

    The selection is frozen when the run is created (one :class:`BulkReprocessItem` per dead
    letter). Each item is reprocessed and marked done in one transaction, so a worker that
    dies resumes after the last committed item: nothing twice, nothing skipped.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    consumer = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    rate = models.FloatField(help_text="dead letters per second, at most")
    total = models.PositiveIntegerField(default=0)
    reprocessed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="resolved or discarded meanwhile: left alone")
    description = models.CharField(max_length=300, blank=True, help_text="how the selection was made")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["consumer"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_active_bulk_reprocess_per_consumer",
            )
        ]
        ordering = ["-created_at", "-id"]
        verbose_name = "bulk reprocess run"

    def __str__(self) -> str:
        return f"bulk reprocess #{self.pk} ({self.consumer})"

    @property
    def done(self) -> int:
        return self.reprocessed + self.skipped

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 1.0


class BulkReprocessItem(models.Model):
    run = models.ForeignKey(BulkReprocess, on_delete=models.CASCADE, related_name="items")
    dead_letter = models.ForeignKey("eventbus.DeadLetter", on_delete=models.CASCADE, related_name="+")
    done_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "dead_letter"], name="bulk_reprocess_item_once")]
        indexes = [
            models.Index(fields=["run", "dead_letter"], condition=models.Q(done_at__isnull=True), name="bulk_item_todo")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.dead_letter_id}"
