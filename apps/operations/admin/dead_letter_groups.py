"""Dead letters grouped by the fingerprint of their failure: a page of groups (count, first and
last seen, a sample, their statuses), a link from each to the dead letters' list filtered by it,
and, for operators, "Reprocess group" (a rate-limited bulk run) and "Discard group" (with a
reason), each behind a confirmation page. Mixed into ``DeadLetterAdmin``, whose permissions it
uses; every change goes through ``apps.operations.dead_letter_groups``."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from apps.eventbus.bounds import truncate
from apps.eventbus.deadletters.fingerprint import is_fingerprint
from apps.eventbus.deadletters.selectors import (
    GROUP_STATUSES,
    DeadLetterGroup,
    dead_letter_group_get,
    dead_letter_groups,
)
from apps.eventbus.models import DeadLetter
from apps.eventbus.registry import registry

from ..dead_letter_groups import DeadLetterGroupClosed, dead_letter_group_discard, dead_letter_group_reprocess
from ..models import BulkReprocess
from ..services import BulkReprocessConflict, BulkReprocessError
from .forms import BulkReprocessForm, DiscardForm
from .widgets import STATUS_COLOURS, badge

GROUPS_PER_PAGE = 50
STATUS_CHOICES = [("open", "Open"), ("all", "All"), *DeadLetter.Status.choices]


class FingerprintFilter(admin.SimpleListFilter):
    """``?fingerprint=<sha256>`` on the dead letters' list: one group's dead letters."""

    title = "failure group"
    parameter_name = "fingerprint"

    def lookups(self, request, model_admin):
        value = self.value()
        if value is None:
            return []  # no choices to list (there may be thousands of groups): reached from the groups page
        if not is_fingerprint(value):
            return [(value, "not a fingerprint")]
        signature = DeadLetter.objects.filter(fingerprint=value).values_list("error_signature", flat=True).first()
        return [(value, truncate(signature, 80) if signature else f"{value[:12]}… (no dead letter)")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not is_fingerprint(value):
            raise IncorrectLookupParameters("a fingerprint is 64 hexadecimal digits")
        return queryset.filter(fingerprint=value)


def group_list_url(fingerprint: str) -> str:
    return reverse("admin:eventbus_deadletter_changelist") + "?" + urlencode({"fingerprint": fingerprint})


class DeadLetterGroupsMixin:
    """The groups pages of ``DeadLetterAdmin`` (it provides ``has_view_permission``,
    ``has_reprocess_permission``, ``has_discard_permission``, ``admin_site``, ``message_user``)."""

    def group_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("groups/", wrap(self.groups_view), name="eventbus_deadletter_groups"),
            path(
                "groups/<str:fingerprint>/reprocess/",
                wrap(self.group_reprocess_view),
                name="eventbus_deadletter_group_reprocess",
            ),
            path(
                "groups/<str:fingerprint>/discard/",
                wrap(self.group_discard_view),
                name="eventbus_deadletter_group_discard",
            ),
        ]

    @admin.display(description="failure group")
    def error_group(self, obj: DeadLetter):
        """On a dead letter's page: its group, and how many others failed the same way."""
        if not obj.fingerprint:
            return "-"
        members = DeadLetter.objects.filter(fingerprint=obj.fingerprint).count()
        return format_html(
            '<code title="{}">{}…</code> {} · <a href="{}">{} dead letter(s) failed the same way</a> · '
            '<a href="{}">all groups</a>',
            obj.fingerprint,
            obj.fingerprint[:12],
            obj.error_signature,
            group_list_url(obj.fingerprint),
            members,
            reverse("admin:eventbus_deadletter_groups") + "?status=all",
        )

    # -- the groups page -----------------------------------------------------------------

    def groups_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        status = request.GET.get("status", "open")
        status = status if status in GROUP_STATUSES else "open"
        consumer = request.GET.get("consumer", "")[:100] or None
        page_number = request.GET.get("p", "1")
        page_number = int(page_number) if page_number.isascii() and page_number.isdigit() else 1
        page = dead_letter_groups(
            status=status, consumer=consumer, page=min(page_number, 1_000_000), page_size=GROUPS_PER_PAGE
        )
        can_reprocess, can_discard = self.has_reprocess_permission(request), self.has_discard_permission(request)

        def here(**changes) -> str:
            query = {"status": status, "consumer": consumer or "", "p": page.page, **changes}
            return "?" + urlencode({name: value for name, value in query.items() if value not in ("", None, 1)})

        return TemplateResponse(
            request,
            "admin/eventbus/deadletter/groups.html",
            {
                **self.admin_site.each_context(request),
                "opts": DeadLetter._meta,
                "title": "Dead letters grouped by failure",
                "page": page,
                "rows": [self._row(group, can_reprocess, can_discard) for group in page.groups],
                "status": status,
                "status_links": [(value, label, here(status=value, p=1)) for value, label in STATUS_CHOICES],
                "consumer": consumer,
                "consumer_links": [("", "All", here(consumer="", p=1))]
                + [(name, name, here(consumer=name, p=1)) for name in sorted(registry.consumers)],
                "previous_url": here(p=page.page - 1) if page.page > 1 else None,
                "next_url": here(p=page.page + 1) if page.page < page.pages else None,
            },
        )

    def _row(self, group: DeadLetterGroup, can_reprocess: bool, can_discard: bool) -> dict:
        return {
            "group": group,
            "statuses": [
                badge(f"{count} {DeadLetter.Status(status).label}", STATUS_COLOURS[status])
                for status, count in group.by_status.items()
                if count
            ],
            "list_url": group_list_url(group.fingerprint),
            "sample_url": reverse("admin:eventbus_deadletter_change", args=[group.sample_id]),
            "reprocess_url": reverse("admin:eventbus_deadletter_group_reprocess", args=[group.fingerprint])
            if can_reprocess and group.open
            else None,
            "discard_url": reverse("admin:eventbus_deadletter_group_discard", args=[group.fingerprint])
            if can_discard and group.open
            else None,
        }

    # -- the two actions: a confirmation page (GET), the action (POST) -------------------

    def _group_for(self, request, fingerprint: str, allowed: bool) -> DeadLetterGroup:
        if not allowed:
            raise PermissionDenied
        group = dead_letter_group_get(fingerprint=fingerprint)
        if group is None:
            raise Http404("no dead-letter group has this fingerprint")
        return group

    def group_reprocess_view(self, request, fingerprint: str):
        group = self._group_for(request, fingerprint, self.has_reprocess_permission(request))
        form = BulkReprocessForm(
            request.POST if request.method == "POST" else None,
            initial={"rate": settings.BULK_REPROCESS_RATE},
            max_rate=settings.BULK_REPROCESS_MAX_RATE,
        )
        if request.method == "POST" and form.is_valid():
            try:
                [run] = dead_letter_group_reprocess(
                    fingerprint=group.fingerprint, actor=request.user, rate=form.cleaned_data["rate"]
                )
            except (DeadLetterGroupClosed, BulkReprocessConflict, BulkReprocessError) as exc:
                self.message_user(request, f"Not reprocessed: {exc}.", messages.ERROR)
                return HttpResponseRedirect(reverse("admin:eventbus_deadletter_groups"))
            self.message_user(
                request,
                f"Bulk reprocess #{run.pk} queued: {run.total} dead letter(s) of {run.consumer} at {run.rate:g}/s; "
                "this page follows it.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:operations_bulkreprocess_change", args=[run.pk]))
        return self._confirm_group(request, group, "reprocess", form)

    def group_discard_view(self, request, fingerprint: str):
        group = self._group_for(request, fingerprint, self.has_discard_permission(request))
        form = DiscardForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                done = dead_letter_group_discard(
                    fingerprint=group.fingerprint, actor=request.user, reason=form.cleaned_data["reason"]
                )
            except (DeadLetterGroupClosed, ValueError) as exc:
                self.message_user(request, f"Not discarded: {exc}.", messages.ERROR)
            else:
                remaining = f"; {done.remaining} still open: discard the group again" if done.remaining else ""
                self.message_user(request, f"{done.discarded} dead letter(s) discarded{remaining}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:eventbus_deadletter_groups"))
        return self._confirm_group(request, group, "discard", form)

    def _confirm_group(self, request, group: DeadLetterGroup, action: str, form):
        return TemplateResponse(
            request,
            "admin/eventbus/deadletter/group_confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": DeadLetter._meta,
                "title": f"{action.capitalize()} a group of dead letters: are you sure?",
                "action": action,
                "form": form,
                "row": self._row(group, False, False),
                "active_runs": BulkReprocess.objects.filter(consumer=group.consumer, status__in=BulkReprocess.ACTIVE),
            },
        )
