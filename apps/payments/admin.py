from django.contrib import admin

from apps.common.admin import LargeTableAdmin, order_link

from .models import Payment


@admin.register(Payment)
class PaymentAdmin(LargeTableAdmin):
    list_display = [
        "id", "order", "status", "amount", "currency", "gateway_charge_id", "gateway_refund_id", "updated_at",
    ]  # fmt: skip
    list_display_links = ["id"]
    list_filter = ["status", "created_at"]
    # Exact matches: order_id has its unique index (the gateway ids have none: a scan, on request only).
    search_fields = ["order_id__exact", "gateway_charge_id__exact", "gateway_refund_id__exact"]
    search_help_text = "An order id or a gateway charge or refund id (exact)."
    ordering = ["-id"]
    fields = [
        "id", "order", "status", "amount", "currency", "gateway_charge_id", "gateway_refund_id", "failure_reason",
        "created_at", "updated_at",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="order", ordering="order_id")
    def order(self, payment):
        return order_link(payment.order_id)
