from django.contrib import admin

from apps.common.admin import LargeTableAdmin, order_link, pretty_json
from apps.eventbus.contracts import all_contracts
from apps.eventbus.registry import registry

from .models import AuditEntry


class StreamFilter(admin.SimpleListFilter):
    """The streams the audit consumer reads, from the registry (a DISTINCT over the log would scan it)."""

    title = "stream"
    parameter_name = "stream"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(registry.streams_of(registry.consumer("audit")))]

    def queryset(self, request, queryset):
        return queryset.filter(stream=self.value()) if self.value() else queryset


class SubjectFilter(admin.SimpleListFilter):
    """The subjects with a registered contract, from code (a DISTINCT over the log would scan it)."""

    title = "subject"
    parameter_name = "subject"

    def lookups(self, request, model_admin):
        return [(subject, subject) for subject in all_contracts()]

    def queryset(self, request, queryset):
        return queryset.filter(subject=self.value()) if self.value() else queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(LargeTableAdmin):
    """Append-only (the database refuses UPDATE and DELETE): nobody adds, changes or deletes here."""

    list_display = ["id", "subject", "correlation", "stream", "stream_sequence", "received_at"]
    list_filter = [StreamFilter, SubjectFilter]
    search_fields = ["correlation_id__exact", "message_id__exact"]  # both indexed
    search_help_text = "A correlation id (an order id) or a message id (exact)."
    ordering = ["-id"]
    fieldsets = [
        (None, {"fields": ["id", "subject", "message_id", "correlation", "stream", "stream_sequence", "received_at"]}),
        ("Message", {"fields": ["pretty_body", "pretty_headers"]}),
        ("As received and chained", {"fields": ["body", "previous_hash", "hash"], "classes": ["collapse"]}),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    @admin.display(description="correlation id", ordering="correlation_id")
    def correlation(self, entry):
        return order_link(entry.correlation_id) if entry.correlation_id else "-"

    @admin.display(description="body, indented")
    def pretty_body(self, entry):
        return pretty_json(entry.body)

    @admin.display(description="headers")
    def pretty_headers(self, entry):
        return pretty_json(entry.headers)
