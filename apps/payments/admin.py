from django.contrib import admin

from orders_platform.admin_base import ReadOnlyAdmin

from .models import Payment


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "status", "amount", "currency", "gateway_charge_id", "gateway_refund_id", "updated_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["order_id", "gateway_charge_id"]
