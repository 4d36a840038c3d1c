import uuid

from django.contrib import admin
from django.db.models import Q

from apps.audit.selectors import order_timeline
from apps.common.admin import LargeTableAdmin, admin_link, html_table, pretty_json
from apps.inventory.selectors import reservations_for_order, stock_decision_for_order
from apps.payments.selectors import payment_for_order

from .models import Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    fields = ["sku", "quantity", "unit_price"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(LargeTableAdmin):
    """An order and what every other app did with it. Payment, stock and the timeline are not
    relations of Order (each app keys on the order id), so they are read-only tables."""

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
    # Choices and date buckets: no filter needs a query. No date_hierarchy: it runs
    # DISTINCT date_trunc over every order of the month shown.
    list_filter = ["status", "payment_state", "stock_state", "created_at"]
    search_fields = ["customer_id__exact"]
    search_help_text = "An order id or a customer id (exact)."
    ordering = ["-created_at"]  # the created_at index, newest first
    inlines = [OrderLineInline]
    fieldsets = [
        (None, {"fields": [
            "id", "customer_id", "status", "cancel_reason", "total_amount", "currency", "payment_state", "payment_id",
            "stock_state", "created_at", "updated_at",
        ]}),
        ("Payment", {"fields": ["payment"]}),
        ("Stock", {"fields": ["stock_decision", "reservations"]}),
        ("Events", {"fields": ["timeline"]}),
    ]  # fmt: skip
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        try:
            pk = uuid.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, term)
        return queryset.filter(Q(pk=pk) | Q(customer_id=term)), False

    @admin.display(description="payment")
    def payment(self, order):
        payment = payment_for_order(str(order.pk))
        if payment is None:
            return "no payment yet"
        return html_table(
            ["payment", "status", "amount", "gateway charge", "gateway refund", "failure", "updated"],
            [
                (
                    admin_link(payment, f"payment #{payment.pk}"),
                    payment.get_status_display(),
                    f"{payment.amount} {payment.currency}",
                    payment.gateway_charge_id or "-",
                    payment.gateway_refund_id or "-",
                    payment.failure_reason or "-",
                    payment.updated_at,
                )
            ],
            "order-payment",
        )

    @admin.display(description="stock decision")
    def stock_decision(self, order):
        decision = stock_decision_for_order(str(order.pk))
        if decision is None:
            return "no stock decision yet"
        return html_table(
            ["decision", "outcome", "decided", "updated"],
            [(admin_link(decision, "stock decision"), decision.get_outcome_display(), decision.decided_at,
              decision.updated_at)],
            "order-stock-decision",
        )  # fmt: skip

    @admin.display(description="reservations")
    def reservations(self, order):
        reservations = reservations_for_order(str(order.pk))
        if not reservations:
            return "no reservations"
        return html_table(
            ["reservation", "product", "quantity", "reserved", "released"],
            (
                (
                    admin_link(r, f"reservation #{r.pk}"),
                    admin_link(r.product, r.product.sku),
                    r.quantity,
                    r.created_at,
                    r.released_at or "held",
                )
                for r in reservations
            ),
            "order-reservations",
        )

    @admin.display(description="timeline (from the audit log)")
    def timeline(self, order):
        events = order_timeline(str(order.pk))
        if not events:
            return "no events recorded yet"
        return html_table(
            ["occurred", "event", "stream", "payload"],
            (
                (e["occurred_at"], e["subject"], f"{e['stream']} #{e['stream_sequence']}", pretty_json(e["payload"]))
                for e in events
            ),
            "order-timeline",
        )
