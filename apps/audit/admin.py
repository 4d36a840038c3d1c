from django.contrib import admin

from orders_platform.admin_base import ReadOnlyAdmin

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject", "correlation_id", "stream", "stream_sequence", "received_at"]
    list_filter = ["stream", "subject"]
    search_fields = ["correlation_id", "message_id"]
    show_full_result_count = False
