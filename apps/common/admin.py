"""Admin helpers every app's admin uses: read-only and large-table model admins, a paginator whose
count stops at a cap, links to a row's (or an order's) admin page, small HTML tables and JSON
shown indented."""

import json
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.urls import NoReverseMatch, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join


class ReadOnlyAdmin(admin.ModelAdmin):
    """State changes go through services (and events); the admin shows, it does not edit.

    No add, change or delete for anyone (superusers included), no bulk actions ("delete
    selected" included) and no POST to a changelist that has nothing to post. A subclass
    that declares actions gets them back."""

    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST" and not self.get_actions(request) and not self.list_editable:
            raise PermissionDenied
        return super().changelist_view(request, extra_context)


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` rows (a COUNT over a LIMITed subquery), so a changelist of a table
    of millions costs what its page costs instead of a scan of the table. Past the cap the pages
    end there (filter or search to go further) and the changelist says "more than"
    (``templates/admin/pagination.html``)."""

    cap = 10_000

    @cached_property
    def _counted(self) -> int:
        return self.object_list.order_by()[: self.cap + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.cap)

    @property
    def capped(self) -> bool:
        return self._counted > self.cap


class LargeTableAdmin(ReadOnlyAdmin):
    """A read-only changelist over a table that grows without bound (100k rows and more): no
    full count, no count per filter choice (each would scan the table), and a count that stops
    at a cap (``admin/pagination.html`` says "more than" past it)."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator


def admin_link(obj, text=None) -> str:
    """A link to ``obj``'s admin page, or its text when it has none (model not registered)."""
    text = str(obj) if text is None else text
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[quote(obj.pk)])
    except NoReverseMatch:
        return text
    return format_html('<a href="{}">{}</a>', url, text)


def order_link(order_id: str) -> str:
    """A link to the order's admin page when ``order_id`` is one this platform issues (a UUID);
    the id as text otherwise (events of external producers carry other ids)."""
    try:
        pk = uuid.UUID(str(order_id))
    except ValueError:
        return order_id
    return format_html('<a href="{}">{}</a>', reverse("admin:orders_order_change", args=[pk]), order_id)


def html_table(headers: Iterable[str], rows: Iterable[Iterable], css_class: str = "") -> str:
    """A small table; every header and cell is escaped unless it is already safe HTML. Times are
    shown in local time to the second; None as "-"."""
    head = format_html_join("", "<th>{}</th>", ((header,) for header in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((_cell(c),) for c in row)),) for row in rows)
    )
    return format_html('<table class="{}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', css_class, head, body)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return formats.date_format(timezone.template_localtime(value), "Y-m-d H:i:s")  # events seconds apart
    return value


def indented_json(value) -> str | None:
    """A JSON value, or text holding one, as indented JSON text; None for text that is not JSON (or
    nested too deeply to indent: a hostile body must not break the page that shows it)."""
    try:
        if isinstance(value, str):
            value = json.loads(value)
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to indent: shown as it is
        return None


def pretty_json(value) -> str:
    """A JSON value, or text holding one, indented in an escaped ``<pre>``; other text as it is."""
    text = indented_json(value)
    if text is None:
        return format_html('<pre class="raw">{}</pre>', value if isinstance(value, str) else repr(value))
    return format_html('<pre class="json">{}</pre>', text)
