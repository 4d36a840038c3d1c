import json

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from apps.audit.selectors import order_timeline
from orders_platform.admin_base import ReadOnlyAdmin

from .models import Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    fields = ["sku", "quantity", "unit_price"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "customer_id",
        "status",
        "total_amount",
        "currency",
        "payment_state",
        "stock_state",
        "created_at",
    ]
    list_filter = ["status", "payment_state", "stock_state", "created_at"]
    search_fields = ["id", "customer_id"]
    date_hierarchy = "created_at"
    inlines = [OrderLineInline]
    readonly_fields = ["timeline"]
    fields = [
        "id", "customer_id", "status", "cancel_reason", "total_amount", "currency", "payment_state", "payment_id",
        "stock_state", "created_at", "updated_at", "timeline",
    ]  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    @admin.display(description="timeline (from the audit log)")
    def timeline(self, order):
        events = order_timeline(str(order.pk))
        if not events:
            return "no events recorded yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} #{}</td><td><pre>{}</pre></td></tr>",
            (
                (e["occurred_at"], e["subject"], e["stream"], e["stream_sequence"], json.dumps(e["payload"], indent=1))
                for e in events
            ),
        )
        return format_html(
            "<table><tr><th>occurred</th><th>event</th><th>stream</th><th>payload</th></tr>{}</table>", rows
        )
