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


class OperatorJob(models.Model):
    """What every job an operator starts from the cockpit records: who started and who cancelled
    it, and when it was created, started and finished."""

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        abstract = True


class BulkReprocess(OperatorJob):
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


class ReplayRun(OperatorJob):
    """A replay of one stream's history through one consumer's handlers
    (``apps.eventbus.consuming.replay``), started from the cockpit and run by a Celery task.

    The position (the last stream sequence replayed), the stream's last sequence and the verdict
    counts are written after every batch. A worker that dies leaves the run ``running``; the
    next worker (or the periodic resume) goes on after the last written position: a batch
    replayed twice is harmless, the idempotency ledger makes its messages duplicates.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    MAX_ERROR = 1000

    consumer = models.CharField(max_length=100)
    stream = models.CharField(max_length=100)
    from_seq = models.PositiveBigIntegerField(null=True, blank=True, help_text="the first stream sequence to replay")
    since = models.DateTimeField(null=True, blank=True, help_text="replay the messages stored from this time on")
    batch_size = models.PositiveIntegerField(default=500)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    position = models.PositiveBigIntegerField(default=0, help_text="the last stream sequence replayed")
    last_seq = models.PositiveBigIntegerField(default=0, help_text="the stream's last sequence: where the run stops")
    counts = models.JSONField(default=dict, blank=True, help_text="messages per verdict (handled, duplicate...)")
    error = models.CharField(max_length=MAX_ERROR, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["consumer"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_active_replay_per_consumer",
            ),
            models.CheckConstraint(
                condition=models.Q(from_seq__isnull=True) | models.Q(since__isnull=True),
                name="replay_from_a_sequence_or_a_time",
            ),
        ]
        ordering = ["-created_at", "-id"]
        default_permissions = ("view",)
        permissions = [("start_replay", "Can start and cancel replays")]
        verbose_name = "replay"

    def __str__(self) -> str:
        return f"replay #{self.pk} ({self.stream} through {self.consumer})"

    @property
    def start(self) -> str:
        if self.from_seq:
            return f"sequence {self.from_seq}"
        if self.since:
            return f"{self.since:%Y-%m-%d %H:%M:%S %Z}"
        return "the start"

    @property
    def progress(self) -> float:
        """How far through the stream, from where the run started (1.0 once completed)."""
        if self.status == self.Status.COMPLETED:
            return 1.0
        first = (self.from_seq or 1) - 1
        if self.last_seq <= first:
            return 0.0
        return min(1.0, max(0, self.position - first) / (self.last_seq - first))
