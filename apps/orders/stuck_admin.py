"""The "Stuck orders" page: the oldest PENDING orders past ``ORDERS_STUCK_AFTER_SECONDS``, what
each waits on and why, with a link to where an operator acts (the dead letter, the consumer).

Read-only, for whoever may view orders (operators and auditors). The page reads everything
through :func:`apps.orders.stuck.stuck_orders`: a fixed number of queries and one look at NATS,
and it still renders, saying so, when NATS does not answer.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path

from apps.common.admin import ReadOnlyAdmin, order_link

from .models import Order
from .stuck import CauseKind, age_text, stuck_after, stuck_orders, stuck_orders_count


class StuckOrder(Order):
    """Not a table of its own: a proxy of Order that gives the stuck-orders page its place in
    the admin (no permissions of its own: seeing orders is enough)."""

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = "stuck order"
        verbose_name_plural = "stuck orders"


@admin.register(StuckOrder)
class StuckOrderAdmin(ReadOnlyAdmin):
    PAGE = 100

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("orders.view_order")

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def get_urls(self):
        return [path("", self.admin_site.admin_view(self.stuck_view), name="orders_stuckorder_changelist")]

    def stuck_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        found = stuck_orders(limit=self.PAGE)
        rows = [
            {
                "order": order_link(str(stuck.order.pk)),
                "age": age_text(stuck.age),
                "customer": stuck.order.customer_id,
                "total": f"{stuck.order.total_amount} {stuck.order.currency}",
                "waits": stuck.waits,
                "link": stuck.first_link,
                "id": stuck.order.pk,
            }
            for stuck in found
        ]
        unreachable = next((c.text for s in found for c in s.causes if c.kind == CauseKind.NATS_UNREACHABLE), None)
        return TemplateResponse(
            request,
            "admin/orders/stuckorder/change_list.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Stuck orders",
                "rows": rows,
                "total": stuck_orders_count() if len(found) == self.PAGE else len(found),
                "page": self.PAGE,
                "stuck_after": age_text(stuck_after()),
                "policy": settings.ORDERS_STUCK_POLICY,
                "cancel_after": age_text(timedelta(seconds=settings.ORDERS_STUCK_CANCEL_AFTER_SECONDS)),
                "nats_error": unreachable,
            },
        )
