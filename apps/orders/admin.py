import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from apps.audit.selectors import order_timeline
from apps.common.admin import LargeTableAdmin, admin_link, html_table, pretty_json
from apps.inventory.selectors import reservations_for_order, stock_decision_for_order
from apps.payments.selectors import payment_for_order

from . import services
from .errors import OrderError
from .models import Order, OrderLine


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=services.MAX_REASON,
        help_text="Required: why. It is kept on the order, in its events and in the audit log, with your name.",
    )
    # The status the operator read on the confirmation page: the saga may decide the order meanwhile.
    expected_status = forms.ChoiceField(choices=Order.Status.choices, required=False, widget=forms.HiddenInput)


# The operator's actions on an order: (permission codename, service, page title, button, what follows).
ACTIONS = {
    "cancel": (
        "cancel_order",
        services.order_cancel_as_operator,
        "Cancel an order",
        "Yes, cancel the order",
        "The order becomes CANCELLED. Payments refunds what it captured and inventory releases what it "
        "reserved, each exactly once; the order's payment and stock states follow when they have.",
    ),
    "refund": (
        "refund_order",
        services.order_refund_as_operator,
        "Refund a confirmed order",
        "Yes, refund it",
        "Payments refunds the whole amount captured, once. The order stays CONFIRMED (the customer keeps "
        "the goods; no stock is released); its payment state becomes Refunded when payments has refunded.",
    ),
}


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
            "id", "customer_id", "status", "cancel_reason", "total_amount", "currency", "money", "payment_state",
            "payment_id", "stock_state", "refund_requested_at", "refund_reason", "created_at", "updated_at",
        ]}),
        ("Payment", {"fields": ["payment"]}),
        ("Stock", {"fields": ["stock_decision", "reservations"]}),
        ("Events", {"fields": ["timeline"]}),
    ]  # fmt: skip
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    # -- the operator's actions: cancel, refund (permission-checked, audited through services) --

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("<uuid:pk>/cancel/", wrap(self.cancel_view), name="orders_order_cancel"),
            path("<uuid:pk>/refund/", wrap(self.refund_view), name="orders_order_refund"),
            *super().get_urls(),
        ]

    @staticmethod
    def may(request, action: str) -> bool:
        return request.user.has_perm(f"orders.{ACTIONS[action][0]}")

    @staticmethod
    def can_cancel(order: Order) -> bool:
        return Order.Status.CANCELLED in services.TRANSITIONS[order.status]

    @staticmethod
    def can_refund(order: Order) -> bool:
        return (
            order.status == Order.Status.CONFIRMED
            and order.payment_state == Order.PaymentState.CAPTURED
            and order.refund_requested_at is None
            and order.total_amount > 0
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context.update(
            can_cancel=obj is not None and self.can_cancel(obj) and self.may(request, "cancel"),
            can_refund=obj is not None and self.can_refund(obj) and self.may(request, "refund"),
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def cancel_view(self, request, pk: uuid.UUID):
        return self._action_view(request, pk, "cancel")

    def refund_view(self, request, pk: uuid.UUID):
        return self._action_view(request, pk, "refund")

    def _action_view(self, request, pk: uuid.UUID, action: str):
        _, service, title, confirm, consequence = ACTIONS[action]
        if not self.may(request, action):
            raise PermissionDenied
        order = get_object_or_404(Order, pk=pk)
        page = reverse("admin:orders_order_change", args=[order.pk])
        form = ReasonForm(request.POST or None, initial={"expected_status": order.status})
        if request.method == "POST" and form.is_valid():
            read = {"expected_status": form.cleaned_data["expected_status"] or None} if action == "cancel" else {}
            try:
                service(order_id=str(order.pk), reason=form.cleaned_data["reason"], actor=request.user, **read)
            except OrderError as exc:
                self.message_user(request, f"Nothing was done: {exc.message}.", messages.ERROR)
            else:
                done = "cancelled" if action == "cancel" else "refund requested"
                self.message_user(request, f"Order {order.pk}: {done}. {consequence}", messages.SUCCESS)
            return HttpResponseRedirect(page)
        return TemplateResponse(
            request,
            "admin/orders/order/action.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                "order": order,
                "form": form,
                "confirm": confirm,
                "consequence": consequence,
                "allowed": self.can_cancel(order) if action == "cancel" else self.can_refund(order),
                "action": action,
            },
        )

    @admin.display(description="money")
    def money(self, order):
        """What the customer paid and got back, from payments' own record (the truth about money)."""
        payment = payment_for_order(str(order.pk))
        if payment is None:
            return "nothing charged (payments has not seen the order)"
        amount = f"{payment.amount} {payment.currency}"
        match payment.status:
            case payment.Status.CAPTURED:
                return f"charged {amount}; kept"
            case payment.Status.REFUNDED:
                return f"charged {amount}; refunded {amount}; kept 0.00 {payment.currency}"
            case payment.Status.PENDING:
                return f"a charge of {amount} is in flight"
            case payment.Status.NO_CHARGE:
                return "nothing charged (zero total)"
        return f"nothing charged ({payment.get_status_display().lower()}: {payment.failure_reason or '-'})"

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
                (
                    e["occurred_at"],
                    e["subject"],
                    f"{e['stream']} #{e['stream_sequence']}",
                    pretty_json(e["body"] if e["payload"] is None else e["payload"]),
                )
                for e in events
            ),
            "order-timeline",
        )


from . import stuck_admin  # noqa: E402, F401 - registers the "Stuck orders" page
