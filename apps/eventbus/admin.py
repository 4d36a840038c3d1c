"""The outbox and the consumers' ledger, read-only. Dead letters have their own admin (apps.operations).

Both tables grow to millions of rows: filters offer values known in code (a DISTINCT over the
table would scan it), searches are exact, orderings follow an index, the count stops at a cap
and neither the full count nor filter counts are computed."""

from datetime import timedelta

from django.contrib import admin
from django.utils import timezone

from orders_platform.admin_base import LargeTableAdmin, order_link, pretty_json

from .contracts import all_contracts
from .models import OutboxEvent, ProcessedMessage
from .registry import REDELIVER_PREFIX, registry

BACKLOG_COUNT_LIMIT = 100_000  # an outage's backlog is counted up to here, so the page stays fast


def outbox_backlog() -> dict:
    """The unsent rows: how many (up to BACKLOG_COUNT_LIMIT) and the oldest. Both walk the
    partial index of unsent rows."""
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True)
    count = unsent.order_by()[: BACKLOG_COUNT_LIMIT + 1].count()
    oldest = unsent.order_by("id").values("id", "created_at").first()
    backlog = {
        "count": count,
        "count_display": f"more than {BACKLOG_COUNT_LIMIT:,}" if count > BACKLOG_COUNT_LIMIT else f"{count:,}",
        "oldest_id": None,
        "oldest": None,
        "age": None,
    }
    if oldest is not None:
        age = timezone.now() - oldest["created_at"]
        backlog.update(oldest_id=oldest["id"], oldest=oldest["created_at"], age=format_age(age))
    return backlog


def format_age(age: timedelta) -> str:
    seconds = max(int(age.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    shown = [f"{value} {unit}" for value, unit in parts if value][:2]
    return " ".join(shown) or "0 s"


class SentFilter(admin.SimpleListFilter):
    title = "published"
    parameter_name = "sent"

    def lookups(self, request, model_admin):
        return [("no", "unsent"), ("yes", "sent")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(sent_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(sent_at__isnull=False)
        return queryset


class SubjectFilter(admin.SimpleListFilter):
    """The subjects with a registered contract, and the reprocessing lanes (redeliver.>)."""

    title = "subject"
    parameter_name = "subject"

    def lookups(self, request, model_admin):
        return [
            *((subject, subject) for subject in all_contracts()),
            (REDELIVER_PREFIX, f"{REDELIVER_PREFIX}.> (reprocessed dead letters)"),
        ]

    def queryset(self, request, queryset):
        if self.value() == REDELIVER_PREFIX:
            return queryset.filter(subject__startswith=f"{REDELIVER_PREFIX}.")
        return queryset.filter(subject=self.value()) if self.value() else queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(LargeTableAdmin):
    list_display = ["id", "subject", "aggregate", "message_id", "created_at", "sent_at", "stream_sequence"]
    list_filter = [SentFilter, SubjectFilter]
    # message_id has its unique index; aggregate_id is indexed for unsent rows only (the relay's
    # index): a search by aggregate scans the table, on request only.
    search_fields = ["message_id__exact", "aggregate_id__exact"]
    search_help_text = "A message id or an aggregate (order) id (exact)."
    ordering = ["-id"]
    fieldsets = [
        (None, {"fields": ["id", "message_id", "subject", "aggregate", "created_at", "sent_at", "stream_sequence"]}),
        ("Message", {"fields": ["pretty_body", "pretty_headers"]}),
        ("On the wire", {"fields": ["body"], "classes": ["collapse"]}),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), "backlog": outbox_backlog()})

    @admin.display(description="aggregate", ordering="aggregate_id")
    def aggregate(self, event):
        return order_link(event.aggregate_id)

    @admin.display(description="body, indented")
    def pretty_body(self, event):
        return pretty_json(event.body)

    @admin.display(description="headers")
    def pretty_headers(self, event):
        return pretty_json(event.headers)


class ConsumerFilter(admin.SimpleListFilter):
    """The declared consumers, from the registry."""

    title = "consumer"
    parameter_name = "consumer"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(registry.consumers)]

    def queryset(self, request, queryset):
        return queryset.filter(consumer=self.value()) if self.value() else queryset


@admin.register(ProcessedMessage)
class ProcessedMessageAdmin(LargeTableAdmin):
    list_display = ["id", "consumer", "message_id", "subject", "processed_at"]
    list_filter = [ConsumerFilter]
    # The unique index (consumer, message_id) serves it: a skip scan over the few consumers
    # (PostgreSQL 18), an exact lookup with the consumer filter.
    search_fields = ["message_id__exact"]
    search_help_text = "A message id (exact)."
    ordering = ["-processed_at"]  # ledger_processed_at_idx
    fields = ["id", "consumer", "message_id", "subject", "processed_at"]
    readonly_fields = fields
