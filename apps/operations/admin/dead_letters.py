"""Dead letters in the cockpit: the list (filters, exact search, a one-click reprocess per row),
a page per dead letter (failure, original message, history, the order's timeline), reprocess,
edit-and-reprocess, discard and the body as a download, two bulk actions (a reprocess run,
a discard), and the dead letters grouped by failure (``dead_letter_groups.py``). Read-only model
admin; every change goes through a service (``apps.eventbus.deadletters.services``,
``apps.operations.services``), which also records it in the audit log."""

from __future__ import annotations

from collections import Counter

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from apps.audit.selectors import order_timeline
from apps.common.admin import LargeTableAdmin, html_table, order_link
from apps.eventbus.deadletters.services import (
    REPROCESSABLE,
    DeadLetterEditError,
    DeadLetterStateError,
    DeadLetterUnpublishable,
    dead_letter_discard,
    dead_letter_edit_and_reprocess,
    dead_letter_reprocess,
    reprocess_refusal,
)
from apps.eventbus.models import DeadLetter
from apps.orders.selectors import order_exists

from ..models import BulkReprocess
from ..services import BulkDiscardError, BulkReprocessConflict, BulkReprocessError, bulk_discard, bulk_reprocess_start
from .dead_letter_groups import DeadLetterGroupsMixin, FingerprintFilter
from .forms import BulkReprocessForm, DiscardForm, EditForm
from .widgets import STATUS_COLOURS, as_text, badge, shown

PAYLOAD_PREVIEW = 64 * 1024  # characters of a payload shown on its page; the whole one is a download
# Large columns the list does not show: not read for a changelist page.
LIST_DEFERRED = ("data", "raw_data", "edited_data", "headers", "traceback")


@admin.register(DeadLetter)
class DeadLetterAdmin(DeadLetterGroupsMixin, LargeTableAdmin):
    list_display = [
        "id", "consumer", "subject", "error_type", "short_error", "attempts", "first_failed_at", "last_failed_at",
        "status_badge", "order",
    ]  # fmt: skip
    list_display_links = ["id"]
    list_filter = ["status", "consumer", "subject", "error_type", "last_failed_at", FingerprintFilter]
    search_fields = ["=correlation_id", "=message_id"]
    search_help_text = "An order id (the correlation id) or a message id, exactly."
    date_hierarchy = "last_failed_at"
    list_per_page = 50
    actions = ["reprocess_selected", "discard_selected"]
    fieldsets = [
        ("Failure", {"fields": ["status_badge", "consumer", "error_type", "error", "error_group", "traceback_text",
                                 "attempts", "failures", "first_failed_at", "last_failed_at"]}),
        ("Original message", {"fields": ["stream", "subject", "stream_sequence", "message_id", "correlation_id",
                                          "order_and_timeline", "body_size", "payload", "edited_payload",
                                          "original_headers", "redelivery"]}),
        ("History", {"fields": ["history_table", "timeline"]}),
    ]  # fmt: skip
    readonly_fields = [
        "status_badge", "consumer", "error_type", "error", "error_group", "traceback_text", "attempts", "failures",
        "first_failed_at", "last_failed_at", "stream", "subject", "stream_sequence", "message_id", "correlation_id",
        "order_and_timeline", "body_size", "payload", "edited_payload", "original_headers", "redelivery",
        "history_table", "timeline",
    ]  # fmt: skip

    # -- permissions: read-only (ReadOnlyAdmin), plus the two operator actions ---------

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("eventbus.reprocess_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("eventbus.discard_deadletter")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == "eventbus_deadletter_changelist":
            queryset = queryset.defer(*LIST_DEFERRED)  # a page of 50 near-limit bodies would be 50 MB
        return queryset

    # -- columns and fields -----------------------------------------------------------

    @admin.display(description="error", ordering="error")
    def short_error(self, obj: DeadLetter) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:79] + "…"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DeadLetter):
        return badge(obj.get_status_display(), STATUS_COLOURS.get(obj.status, "#666"))

    @admin.display(description="order")
    def order(self, obj: DeadLetter):
        return order_link(obj.correlation_id) if obj.correlation_id else "-"

    def get_list_display(self, request):
        """The last column: a one-click Reprocess, for those allowed, on rows it applies to. It
        posts with the changelist form, which carries the CSRF token."""
        can_reprocess = self.has_reprocess_permission(request)

        @admin.display(description="")
        def reprocess_button(obj: DeadLetter):
            if not can_reprocess or obj.status not in REPROCESSABLE or reprocess_refusal(obj, route_only=True):
                return ""
            return format_html(
                '<button type="submit" class="button cockpit-reprocess" formmethod="post" formaction="{}" '
                'title="Deliver it again to {}">Reprocess</button>',
                reverse("admin:eventbus_deadletter_reprocess", args=[obj.pk]),
                obj.consumer,
            )

        return [*self.list_display, reprocess_button]

    @admin.display(description="order and timeline")
    def order_and_timeline(self, obj: DeadLetter):
        if not order_exists(order_id=obj.correlation_id):
            return "no order with this correlation id"
        entries = reverse("admin:audit_auditentry_changelist") + f"?q={obj.correlation_id}"
        return format_html(
            '{} (its page shows the event timeline) · <a href="{}">its audit entries</a>',
            order_link(obj.correlation_id),
            entries,
        )

    @admin.display(description="size")
    def body_size(self, obj: DeadLetter):
        download = format_html(
            '<a href="{}" id="cockpit-download">download the body</a>',
            reverse("admin:eventbus_deadletter_body", args=[obj.pk]),
        )
        exact = (
            " · not UTF-8 text (or holds NUL characters): shown escaped below, its exact bytes are kept"
            if obj.raw_data is not None
            else ""
        )
        return format_html("{} ({} bytes){} · {}", filesizeformat(obj.size), f"{obj.size:,}", exact, download)

    @admin.display(description="payload (original)")
    def payload(self, obj: DeadLetter):
        if len(obj.data) <= PAYLOAD_PREVIEW:
            return shown(obj.data)
        return format_html(
            '<p>The first {} of {} characters; download the body for the whole of it.</p><pre class="raw">{}</pre>',
            f"{PAYLOAD_PREVIEW:,}",
            f"{len(obj.data):,}",
            obj.data[:PAYLOAD_PREVIEW],
        )

    @admin.display(description="reprocessing")
    def redelivery(self, obj: DeadLetter):
        if obj.status not in REPROCESSABLE:
            return f"not open ({obj.get_status_display().lower()})"
        refusal = reprocess_refusal(obj)
        if refusal is None:
            return f"possible: a redelivery to {obj.consumer} on redeliver.{obj.stream}.{obj.consumer}"
        return format_html('<strong class="cockpit-refusal">refused</strong>: {}', refusal)

    @admin.display(description="payload (edited)")
    def edited_payload(self, obj: DeadLetter):
        if not obj.edited_data:
            return "not edited"
        return shown(obj.edited_data)

    @admin.display(description="headers")
    def original_headers(self, obj: DeadLetter):
        return shown(obj.headers) if obj.headers else "none"

    @admin.display(description="traceback")
    def traceback_text(self, obj: DeadLetter):
        if not obj.traceback:
            return "none (refused before a handler ran: undecodable, no contract, invalid, or given up by the server)"
        return format_html('<pre class="cockpit-traceback">{}</pre>', obj.traceback)

    @admin.display(description="attempts and operator actions")
    def history_table(self, obj: DeadLetter):
        return html_table(
            ["when", "what", "who", "note"],
            (
                (
                    event.at,
                    event.get_kind_display(),
                    event.actor or "platform",
                    format_html("<pre>{}</pre>", event.note),
                )
                for event in obj.history.select_related("actor")
            ),
            css_class="cockpit-history",
        )

    @admin.display(description="order timeline (audit log)")
    def timeline(self, obj: DeadLetter):
        if not obj.correlation_id:
            return "no correlation id"
        events = order_timeline(obj.correlation_id)
        if not events:
            return "no events recorded for this correlation id"
        return html_table(
            ["occurred", "event", "stream"],
            ((e["occurred_at"], e["subject"], f"{e['stream']} #{e['stream_sequence']}") for e in events),
        )

    # -- pages --------------------------------------------------------------------------

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("<int:pk>/reprocess/", wrap(self.reprocess_view), name="eventbus_deadletter_reprocess"),
            path("<int:pk>/discard/", wrap(self.discard_view), name="eventbus_deadletter_discard"),
            path("<int:pk>/edit/", wrap(self.edit_view), name="eventbus_deadletter_edit"),
            path("<int:pk>/body/", wrap(self.body_view), name="eventbus_deadletter_body"),
            *self.group_urls(),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        """The buttons follow the status of the very row the page shows (a reprocess may
        resolve it between two reads)."""
        open_ = obj is not None and obj.status in REPROCESSABLE
        # No stream or consumer would take its redelivery: neither reprocess nor an edit can help.
        routable = open_ and reprocess_refusal(obj, route_only=True) is None
        context.update(
            can_reprocess=routable and self.has_reprocess_permission(request),
            can_discard=open_ and self.has_discard_permission(request),
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _dead_letter(self, request, pk: int, action: str) -> DeadLetter:
        if not getattr(self, f"has_{action}_permission")(request):
            raise PermissionDenied
        return get_object_or_404(DeadLetter, pk=pk)

    def _back(self, request, dead_letter: DeadLetter) -> HttpResponseRedirect:
        changelist = reverse("admin:eventbus_deadletter_changelist")
        referer = request.META.get("HTTP_REFERER", "")
        if changelist in referer and "/change/" not in referer:
            return HttpResponseRedirect(referer)  # back to the filtered list the click came from
        return HttpResponseRedirect(reverse("admin:eventbus_deadletter_change", args=[dead_letter.pk]))

    def reprocess_view(self, request, pk: int):
        return require_POST(self._reprocess)(request, pk)

    def _reprocess(self, request, pk: int):
        dead_letter = self._dead_letter(request, pk, "reprocess")
        try:
            dead_letter_reprocess(dead_letter=dead_letter, actor=request.user)
        except DeadLetterUnpublishable as exc:
            self.message_user(request, f"Refused, nothing was sent: {exc}.", messages.ERROR)
        except DeadLetterStateError as exc:
            self.message_user(request, f"Not reprocessed: {exc}.", messages.ERROR)
        else:
            self.message_user(
                request,
                f"Dead letter {dead_letter.pk} is on its way back to {dead_letter.consumer}; "
                "its status changes when the consumer has handled it (or failed again).",
                messages.SUCCESS,
            )
        return self._back(request, dead_letter)

    def discard_view(self, request, pk: int):
        dead_letter = self._dead_letter(request, pk, "discard")
        form = DiscardForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                dead_letter_discard(dead_letter=dead_letter, actor=request.user, reason=form.cleaned_data["reason"])
            except DeadLetterStateError as exc:
                self.message_user(request, f"Not discarded: {exc}.", messages.ERROR)
            else:
                self.message_user(request, f"Dead letter {dead_letter.pk} discarded.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:eventbus_deadletter_change", args=[dead_letter.pk]))
        return self._page(request, "admin/eventbus/deadletter/discard.html", "Discard a dead letter", dead_letter, form)

    def edit_view(self, request, pk: int):
        dead_letter = self._dead_letter(request, pk, "reprocess")
        if dead_letter.status not in REPROCESSABLE:
            self.message_user(request, f"Dead letter {pk} is {dead_letter.status}; nothing to edit.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:eventbus_deadletter_change", args=[pk]))
        initial = {"data": as_text(dead_letter.edited_data or dead_letter.data)}
        form = EditForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                dead_letter_edit_and_reprocess(
                    dead_letter=dead_letter, actor=request.user, data=form.cleaned_data["data"]
                )
            except DeadLetterEditError as exc:  # the form again, with the contract's complaint
                form.add_error("data", f"Does not satisfy {dead_letter.subject}: {exc}")
            except DeadLetterUnpublishable as exc:  # the form again: a smaller payload may do
                form.add_error("data", f"Refused, nothing was saved or sent: {exc}")
            except DeadLetterStateError as exc:
                self.message_user(request, f"Not reprocessed: {exc}.", messages.ERROR)
                return HttpResponseRedirect(reverse("admin:eventbus_deadletter_change", args=[pk]))
            else:
                self.message_user(
                    request,
                    f"Dead letter {pk} edited and on its way back to {dead_letter.consumer}; the original is kept.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:eventbus_deadletter_change", args=[pk]))
        return self._page(
            request,
            "admin/eventbus/deadletter/edit.html",
            "Edit and reprocess a dead letter",
            dead_letter,
            form,
            original=as_text(dead_letter.data),
        )

    def body_view(self, request, pk: int):
        """The original body exactly as received (its bytes), as a download."""
        dead_letter = get_object_or_404(DeadLetter, pk=pk)
        if not self.has_view_permission(request, dead_letter):
            raise PermissionDenied
        body = bytes(dead_letter.raw_data) if dead_letter.raw_data is not None else dead_letter.data.encode()
        response = HttpResponse(body, content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="dead-letter-{dead_letter.pk}.bin"'
        return response

    def _page(self, request, template: str, title: str, dead_letter: DeadLetter, form, **context):
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                "dead_letter": dead_letter,
                "form": form,
                **context,
            },
        )

    # -- bulk actions (a selection, or "all matching this filter") -------------------------

    @admin.action(permissions=["reprocess"], description="Reprocess the selected dead letters (bulk run)")
    def reprocess_selected(self, request, queryset: QuerySet[DeadLetter]):
        from django.conf import settings

        form = BulkReprocessForm(
            request.POST if "confirm" in request.POST else None,
            initial={"rate": settings.BULK_REPROCESS_RATE},
            max_rate=settings.BULK_REPROCESS_MAX_RATE,
        )
        if "confirm" in request.POST and form.is_valid():
            try:
                runs = bulk_reprocess_start(
                    dead_letters=queryset,
                    actor=request.user,
                    rate=form.cleaned_data["rate"],
                    description=_describe_selection(request),
                )
            except (BulkReprocessConflict, BulkReprocessError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            for run in runs:
                self.message_user(
                    request,
                    format_html(
                        'Bulk reprocess <a href="{}">#{}</a> queued: {} dead letter(s) of {} at {}/s.',
                        reverse("admin:operations_bulkreprocess_change", args=[run.pk]),
                        run.pk,
                        run.total,
                        run.consumer,
                        f"{run.rate:g}",
                    ),
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(reverse("admin:operations_bulkreprocess_changelist"))
        return self._confirm(request, queryset, "reprocess", form)

    @admin.action(permissions=["discard"], description="Discard the selected dead letters")
    def discard_selected(self, request, queryset: QuerySet[DeadLetter]):
        form = DiscardForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            try:
                discarded = bulk_discard(dead_letters=queryset, actor=request.user, reason=form.cleaned_data["reason"])
            except BulkDiscardError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            self.message_user(request, f"{discarded} dead letter(s) discarded.", messages.SUCCESS)
            return None
        return self._confirm(request, queryset, "discard", form)

    def _confirm(self, request, queryset, action: str, form):
        by_status = Counter(queryset.values_list("status", flat=True).order_by())
        applicable = queryset.filter(status__in=REPROCESSABLE)  # open ones: both actions apply to them only
        by_consumer = Counter(applicable.values_list("consumer", flat=True).order_by())
        return TemplateResponse(
            request,
            "admin/eventbus/deadletter/bulk_confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"{action.capitalize()} dead letters: are you sure?",
                "action": action,
                "action_name": f"{action}_selected",
                "form": form,
                "by_status": sorted((DeadLetter.Status(s).label, n) for s, n in by_status.items()),
                "by_consumer": sorted(by_consumer.items()),
                "applicable": sum(by_consumer.values()),
                "selected": sum(by_status.values()),
                "select_across": request.POST.get("select_across", "0"),
                "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "active_runs": BulkReprocess.objects.filter(
                    consumer__in=list(by_consumer), status__in=BulkReprocess.ACTIVE
                ),
            },
        )


def _describe_selection(request) -> str:
    if request.POST.get("select_across") == "1":
        query = request.GET.urlencode()
        return f"all matching the filter {query}" if query else "all dead letters"
    return f"{len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))} selected on the list"
