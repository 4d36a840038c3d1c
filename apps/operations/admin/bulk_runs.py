"""Bulk reprocess runs: their progress (the pages refresh while one is active) and a cancel
button. A run is started from the dead letters' list (``dead_letters.py``) and worked through by
a Celery task (``apps.operations.services``)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.common.admin import ReadOnlyAdmin

from ..models import BulkReprocess
from ..services import bulk_reprocess_cancel


@admin.register(BulkReprocess)
class BulkReprocessAdmin(ReadOnlyAdmin):
    list_display = ["id", "consumer", "status", "progress_bar", "reprocessed", "skipped", "total", "rate",
                    "created_by", "created_at", "finished_at"]  # fmt: skip
    list_filter = ["status", "consumer"]
    readonly_fields = ["consumer", "status", "progress_bar", "total", "reprocessed", "skipped", "rate", "description",
                       "created_by", "created_at", "started_at", "finished_at", "cancelled_by",
                       "items_table"]  # fmt: skip
    fields = readonly_fields

    @admin.display(description="progress")
    def progress_bar(self, run: BulkReprocess):
        percent = round(100 * run.progress)
        return format_html(
            '<progress class="cockpit-progress" max="{}" value="{}"></progress> {} of {} ({}%)',
            run.total,
            run.done,
            run.done,
            run.total,
            percent,
        )

    @admin.display(description="items (the last 50 done)")
    def items_table(self, run: BulkReprocess):
        items = run.items.filter(done_at__isnull=False).order_by("-done_at")[:50]
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>',
            (
                (reverse("admin:eventbus_deadletter_change", args=[i.dead_letter_id]), i.dead_letter_id,
                 i.done_at.strftime("%H:%M:%S"), i.outcome)
                for i in items
            ),
        )  # fmt: skip
        return format_html("<table><tr><th>dead letter</th><th>done</th><th>outcome</th></tr>{}</table>", rows)

    def get_urls(self):
        return [
            path(
                "<int:pk>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name="operations_bulkreprocess_cancel",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        active = BulkReprocess.objects.filter(status__in=BulkReprocess.ACTIVE).exists()
        return super().changelist_view(request, {"refresh": active, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        active = run is not None and run.status in BulkReprocess.ACTIVE
        extra = {
            "refresh": active,
            "can_cancel": active and request.user.has_perm("eventbus.reprocess_deadletter"),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def cancel_view(self, request, pk: int):
        if not request.user.has_perm("eventbus.reprocess_deadletter"):
            raise PermissionDenied
        run = get_object_or_404(BulkReprocess, pk=pk)
        if bulk_reprocess_cancel(run=run, actor=request.user):
            self.message_user(request, f"Bulk reprocess #{pk} cancelled after the item in hand.", messages.SUCCESS)
        else:
            self.message_user(request, f"Bulk reprocess #{pk} had already finished.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:operations_bulkreprocess_change", args=[pk]))
