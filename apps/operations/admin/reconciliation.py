"""The outbox reconciliation's runs (``apps/eventbus/producing/reconciliation.py``): when each ran,
over which window, what it checked, found missing and republished, and a "Run now" button for
operators (``eventbus.run_reconciliation``) that queues a run. Auditors see the same list without
the button; a POST from them is refused."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.common.admin import ReadOnlyAdmin
from apps.eventbus.models import ReconciliationRun
from apps.eventbus.producing.reconciliation import ACTIVE, reconciliation_request

from .outbox import format_age
from .widgets import badge, run_badge

RUN_PERMISSION = "eventbus.run_reconciliation"


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "when", "window", "checked", "missing_shown", "republished", "failed_shown", "status_shown",
                    "triggered", "took"]  # fmt: skip
    list_display_links = ["id", "when"]
    list_filter = ["status"]
    readonly_fields = ["status_shown", "triggered", "created_at", "started_at", "finished_at", "window", "first_id",
                       "last_id", "complete", "checked", "missing", "republished", "failed", "republished_list",
                       "error"]  # fmt: skip
    fields = readonly_fields

    @admin.display(description="when", ordering="id")
    def when(self, run: ReconciliationRun):
        return run.started_at or run.created_at

    @admin.display(description="window (written from, sent until)")
    def window(self, run: ReconciliationRun):
        if run.window_start is None or run.window_end is None:
            return "-"
        start, end = timezone.localtime(run.window_start), timezone.localtime(run.window_end)
        return format_html(
            "{} → {} <small>({})</small>",
            start.strftime("%Y-%m-%d %H:%M:%S"),
            end.strftime("%H:%M:%S" if start.date() == end.date() else "%Y-%m-%d %H:%M:%S"),
            format_age(end - start),
        )

    @admin.display(description="missing", ordering="missing")
    def missing_shown(self, run: ReconciliationRun):
        return badge(str(run.missing), "#ba2121") if run.missing else 0

    @admin.display(description="failed", ordering="failed")
    def failed_shown(self, run: ReconciliationRun):
        return badge(str(run.failed), "#8e0000") if run.failed else 0

    @admin.display(description="status", ordering="status")
    def status_shown(self, run: ReconciliationRun):
        label = run.get_status_display()
        if run.status == ReconciliationRun.Status.COMPLETED and not run.complete:
            label += " (window not finished: the next run goes on)"
        return run_badge(run, label)

    @admin.display(description="triggered by")
    def triggered(self, run: ReconciliationRun):
        return run.triggered_by.get_username() if run.triggered_by else "the schedule"

    @admin.display(description="took")
    def took(self, run: ReconciliationRun):
        if run.started_at and run.finished_at:
            return f"{(run.finished_at - run.started_at).total_seconds():.1f} s"
        return "-"

    @admin.display(description="republished message ids (the first 100)")
    def republished_list(self, run: ReconciliationRun):
        ids = [value for value in run.republished_ids if isinstance(value, str)] if run.republished_ids else []
        if not ids:
            return "-"
        links = format_html_join(
            ", ",
            '<a href="{}?q={}">{}</a>',
            ((reverse("admin:eventbus_outboxevent_changelist"), value, value) for value in ids),
        )
        return links

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("triggered_by")

    def get_urls(self):
        return [
            path(
                "run/",
                self.admin_site.admin_view(require_POST(self.run_view)),
                name="eventbus_reconciliationrun_run",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        config = settings.EVENTBUS_RECONCILE
        every = settings.CELERY_BEAT_SCHEDULE.get("reconcile-outbox", {}).get("schedule")
        extra = {
            "can_run": request.user.has_perm(RUN_PERMISSION),
            "refresh": ReconciliationRun.objects.filter(status__in=ACTIVE).exists(),
            "window": format_age(timedelta(minutes=config["WINDOW_MINUTES"])),
            "settle": format_age(timedelta(seconds=config["SETTLE_SECONDS"])),
            "every": format_age(timedelta(seconds=every)) if isinstance(every, int | float) else None,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra = {"refresh": run is not None and run.status in ACTIVE, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    def run_view(self, request):
        if not request.user.has_perm(RUN_PERMISSION):
            raise PermissionDenied
        run, created = reconciliation_request(actor=request.user)
        if created:
            self.message_user(request, f"Reconciliation #{run.pk} queued.", messages.SUCCESS)
        else:
            self.message_user(
                request, f"Reconciliation #{run.pk} is already {run.get_status_display().lower()}.", messages.WARNING
            )
        return HttpResponseRedirect(reverse("admin:eventbus_reconciliationrun_changelist"))
