"""The event backbone's own tables, read-only: the outbox (its backlog on top of the list), the
consumers' ledger, and the events the relay set aside (requeue or discard, audited). Dead letters
have their own admin (``dead_letters.py``).

The outbox and the ledger grow to millions of rows: filters offer values known in code (a
DISTINCT over the table would scan it), searches are exact, orderings follow an index, the count
stops at a cap and neither the full count nor filter counts are computed."""

from datetime import timedelta

from django.contrib import admin, messages
from django.utils import timezone

from apps.common.admin import LargeTableAdmin, ReadOnlyAdmin, order_link, pretty_json
from apps.eventbus.contracts import all_contracts
from apps.eventbus.models import OutboxDeadLetter, OutboxEvent, ProcessedMessage
from apps.eventbus.producing.outbox import (
    OutboxDeadLetterStateError,
    outbox_dead_letter_discard,
    outbox_dead_letter_requeue,
)
from apps.eventbus.registry import REDELIVER_PREFIX, registry

from .forms import SetAsideActionForm

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
    """The subjects with a registered contract, and the redelivery subjects (redeliver.>)."""

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


@admin.register(OutboxDeadLetter)
class OutboxDeadLetterAdmin(ReadOnlyAdmin):
    """Events JetStream could never accept as they were (no stream for the subject, over the
    server's max_payload, a header it refuses), set aside by the relay so nothing waits behind
    them. Requeue a copy once the cause is fixed, or discard with a reason; both are audited."""

    list_display = ["refused_at", "subject", "aggregate", "message_id", "reason", "status"]
    list_filter = ["status"]
    search_fields = ["message_id__exact", "aggregate_id__exact"]
    search_help_text = "A message id or an aggregate (order) id (exact)."
    ordering = ["-refused_at", "-id"]
    fieldsets = [
        (None, {"fields": ["outbox_id", "message_id", "subject", "aggregate", "created_at", "refused_at", "reason"]}),
        ("Status", {"fields": ["status", "status_changed_at", "note"]}),
        ("Message", {"fields": ["body_size", "pretty_headers", "body"]}),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]
    actions = ["requeue_selected", "discard_selected"]
    action_form = SetAsideActionForm

    def has_requeue_permission(self, request) -> bool:
        return request.user.has_perm("eventbus.requeue_outboxdeadletter")

    @admin.display(description="aggregate", ordering="aggregate_id")
    def aggregate(self, dead):
        return order_link(dead.aggregate_id)

    @admin.display(description="body size")
    def body_size(self, dead):
        return f"{len(dead.body.encode()):,} bytes"

    @admin.display(description="headers")
    def pretty_headers(self, dead):
        return pretty_json(dead.headers)

    @admin.action(description="Requeue a copy of the selected events (after fixing the cause)", permissions=["requeue"])
    def requeue_selected(self, request, queryset):
        done = 0
        for dead in queryset.filter(status=OutboxDeadLetter.Status.REFUSED):
            try:
                outbox_dead_letter_requeue(dead=dead, actor=request.user)
            except OutboxDeadLetterStateError as exc:
                self.message_user(request, f"Not requeued: {exc}.", messages.WARNING)
            else:
                done += 1
        self.message_user(request, f"{done} event(s) requeued.", messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Discard the selected events (a reason is required)", permissions=["requeue"])
    def discard_selected(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, "Give a reason to discard events; nothing was discarded.", messages.ERROR)
            return
        done = 0
        for dead in queryset.filter(status=OutboxDeadLetter.Status.REFUSED):
            try:
                outbox_dead_letter_discard(dead=dead, actor=request.user, reason=reason)
            except OutboxDeadLetterStateError as exc:
                self.message_user(request, f"Not discarded: {exc}.", messages.WARNING)
            else:
                done += 1
        self.message_user(request, f"{done} event(s) discarded.", messages.SUCCESS if done else messages.WARNING)
