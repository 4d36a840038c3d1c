from django.contrib import admin
from django.db.models import F
from django.utils.html import format_html

from apps.common.admin import LargeTableAdmin, ReadOnlyAdmin, admin_link, html_table, order_link

from .models import Product, Reservation, StockDecision
from .selectors import reservations_for_order

LOW_STOCK = 10
# The stock cell of a product: (css class, title, inline style) per level.
STOCK_LEVELS = {
    "out": ("stock-out", "out of stock", "background:#ba2121;color:#fff;"),
    "low": ("stock-low", f"low stock (under {LOW_STOCK})", "background:#ffbf00;color:#000;"),
    "ok": ("stock-ok", "in stock", ""),
}


def stock_level(stock_on_hand: int) -> str:
    if stock_on_hand == 0:
        return "out"
    return "low" if stock_on_hand < LOW_STOCK else "ok"


class StockLevel(admin.SimpleListFilter):
    title = "stock level"
    parameter_name = "stock"

    def lookups(self, request, model_admin):
        return [("out", "out of stock"), ("low", f"low (under {LOW_STOCK})"), ("ok", "in stock")]

    def queryset(self, request, queryset):
        if self.value() == "out":
            return queryset.filter(stock_on_hand=0)
        if self.value() == "low":
            return queryset.filter(stock_on_hand__gt=0, stock_on_hand__lt=LOW_STOCK)
        if self.value() == "ok":
            return queryset.filter(stock_on_hand__gte=LOW_STOCK)
        return queryset


@admin.register(Product)
class ProductAdmin(ReadOnlyAdmin):
    list_display = ["sku", "name", "price", "stock", "updated_at"]
    list_filter = [StockLevel]
    search_fields = ["sku", "name"]
    # Emptiest first. A catalogue is small (no index on stock: it would slow every reservation).
    ordering = [F("stock_on_hand").asc(), "sku"]
    fields = ["sku", "name", "price", "stock", "created_at", "updated_at"]
    readonly_fields = fields

    @admin.display(description="stock on hand", ordering="stock_on_hand")
    def stock(self, product):
        css_class, title, style = STOCK_LEVELS[stock_level(product.stock_on_hand)]
        return format_html(
            '<span class="stock-level {}" title="{}" style="{}padding:1px 6px;border-radius:3px;">{}</span>',
            css_class,
            title,
            style,
            product.stock_on_hand,
        )


@admin.register(StockDecision)
class StockDecisionAdmin(LargeTableAdmin):
    list_display = ["order_id", "order", "outcome", "decided_at", "updated_at"]
    # No date_hierarchy: it would aggregate decided_at, which has no index, over every row.
    list_filter = ["outcome", "decided_at"]
    search_fields = ["order_id__exact"]
    search_help_text = "An order id (exact)."
    ordering = ["-order_id"]  # the primary key
    fields = ["order_id", "order", "outcome", "decided_at", "updated_at", "reservations"]
    readonly_fields = fields

    @admin.display(description="order")
    def order(self, decision):
        return order_link(decision.order_id)

    @admin.display(description="reservations")
    def reservations(self, decision):
        reservations = reservations_for_order(decision.order_id)
        if not reservations:
            return "no reservations"
        return html_table(
            ["reservation", "product", "quantity", "reserved", "released"],
            (
                (admin_link(r, f"reservation #{r.pk}"), admin_link(r.product, r.product.sku), r.quantity,
                 r.created_at, r.released_at or "held")
                for r in reservations
            ),
            "decision-reservations",
        )  # fmt: skip


class ReservationState(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("held", "held"), ("released", "released")]

    def queryset(self, request, queryset):
        if self.value() == "held":
            return queryset.filter(released_at__isnull=True)
        if self.value() == "released":
            return queryset.filter(released_at__isnull=False)
        return queryset


@admin.register(Reservation)
class ReservationAdmin(LargeTableAdmin):
    list_display = ["id", "order", "product_link", "quantity", "created_at", "released_at"]
    list_filter = [ReservationState, "created_at"]
    search_fields = ["order_id__exact", "product__sku__exact"]
    search_help_text = "An order id or a SKU (exact)."
    list_select_related = ["product"]
    ordering = ["-id"]
    fields = ["id", "order", "product_link", "quantity", "created_at", "released_at"]
    readonly_fields = fields

    @admin.display(description="order", ordering="order_id")
    def order(self, reservation):
        return order_link(reservation.order_id)

    @admin.display(description="product", ordering="product__sku")
    def product_link(self, reservation):
        return admin_link(reservation.product, reservation.product.sku)
