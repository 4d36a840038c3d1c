"""Replays: a stream's history through one consumer's handlers, started here by an operator
(the consumers page links each consumer's "Replay…"), run by a Celery task
(``apps.operations.replays``), its progress shown while it runs, cancellable. Auditors see the
runs; only ``operations.start_replay`` starts or cancels one.

Not a consumer reset: the consumer's durable (where it reads on the server) does not move."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.common.admin import ReadOnlyAdmin
from apps.eventbus.consuming.settlement import SETTLED
from apps.eventbus.registry import registry

from ..models import ReplayRun
from ..replays import DEFAULT_BATCH, MAX_BATCH, ReplayError, replay_cancel, replay_start
from .widgets import run_badge

PERMISSION = "operations.start_replay"


def streams_by_consumer() -> dict[str, list[str]]:
    """Each declared consumer and the streams it reads (what a replay may ask for)."""
    return {name: sorted(registry.streams_of(spec)) for name, spec in sorted(registry.consumers.items())}


class ReplayForm(forms.Form):
    """Collects the input; ``replay_start`` checks it (a stream the consumer reads, one start,
    bounds) and its errors are shown on the fields they concern."""

    consumer = forms.ChoiceField(help_text="Whose handlers run again (through its idempotency ledger).")
    stream = forms.ChoiceField(help_text="A stream the consumer reads.")
    from_seq = forms.IntegerField(
        required=False, label="From sequence", help_text="The first stream sequence to replay (1 or more)."
    )
    since = forms.DateTimeField(
        required=False,
        label="From time",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"),
        help_text="Or the messages stored from this time on (UTC). Neither: from the stream's first message.",
    )
    batch_size = forms.IntegerField(
        initial=DEFAULT_BATCH, help_text=f"Messages per batch (1 to {MAX_BATCH}); progress is saved after each."
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        streams = streams_by_consumer()
        self.fields["consumer"].choices = [(name, name) for name in streams]
        readable = sorted({stream for each in streams.values() for stream in each})
        self.fields["stream"].choices = [(name, name) for name in readable]


def _counts(run: ReplayRun):
    """The verdict counts, those that are not settled (a handler failed) in red."""
    if not run.counts:
        return "-"
    return format_html_join(
        ", ",
        '<span style="{}">{} {}</span>',
        (
            ("" if verdict in SETTLED else "color:#ba2121;font-weight:bold", verdict.replace("_", " "), count)
            for verdict, count in sorted(run.counts.items())
        ),
    )


@admin.register(ReplayRun)
class ReplayRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "consumer", "stream", "start", "status_badge", "progress_bar", "counts_shown",
                    "created_by", "created_at", "finished_at"]  # fmt: skip
    list_filter = ["status", "consumer", "stream"]
    readonly_fields = ["consumer", "stream", "start", "batch_size", "status_badge", "progress_bar", "counts_shown",
                       "error", "created_by", "created_at", "started_at", "finished_at", "cancelled_by"]  # fmt: skip
    fields = readonly_fields

    @admin.display(description="from")
    def start(self, run: ReplayRun) -> str:
        return run.start

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: ReplayRun):
        return run_badge(run)

    @admin.display(description="progress")
    def progress_bar(self, run: ReplayRun):
        if not run.last_seq:  # it has not read the stream (yet)
            return "nothing read yet" if run.status in ReplayRun.ACTIVE else "nothing read"
        percent = round(100 * run.progress)
        return format_html(
            '<progress class="cockpit-progress" max="100" value="{}"></progress> #{} of #{} ({}%)',
            percent,
            run.position,
            run.last_seq,
            percent,
        )

    @admin.display(description="messages per verdict")
    def counts_shown(self, run: ReplayRun):
        return _counts(run)

    def has_start_permission(self, request) -> bool:
        return request.user.has_perm(PERMISSION)

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("start/", wrap(self.start_view), name="operations_replayrun_start"),
            path("<int:pk>/cancel/", wrap(require_POST(self.cancel_view)), name="operations_replayrun_cancel"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {
            "refresh": ReplayRun.objects.filter(status__in=ReplayRun.ACTIVE).exists(),
            "can_start": self.has_start_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        active = run is not None and run.status in ReplayRun.ACTIVE
        can_cancel = active and self.has_start_permission(request)
        extra = {"refresh": active, "can_cancel": can_cancel, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    def start_view(self, request):
        if not self.has_start_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = ReplayForm(request.POST)
            if form.is_valid():
                try:
                    run = replay_start(**form.cleaned_data, actor=request.user)
                except ReplayError as exc:
                    form.add_error(exc.field, str(exc))
                else:
                    self.message_user(request, f"{run} queued.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:operations_replayrun_change", args=[run.pk]))
        else:
            form = ReplayForm(initial={key: request.GET[key] for key in ("consumer", "stream") if key in request.GET})
        return TemplateResponse(
            request,
            "admin/operations/replayrun/start.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Start a replay",
                "form": form,
                "streams_by_consumer": streams_by_consumer(),
                "active_runs": ReplayRun.objects.filter(status__in=ReplayRun.ACTIVE),
            },
        )

    def cancel_view(self, request, pk: int):
        if not self.has_start_permission(request):
            raise PermissionDenied
        run = get_object_or_404(ReplayRun, pk=pk)
        if replay_cancel(run=run, actor=request.user):
            self.message_user(request, f"Replay #{pk} cancelled after the batch in hand.", messages.SUCCESS)
        else:
            self.message_user(request, f"Replay #{pk} had already finished.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:operations_replayrun_change", args=[pk]))
