from django.contrib import admin
from django.db.models import F

from orders_platform.admin_base import ReadOnlyAdmin

from .models import Product, Reservation, StockDecision

LOW_STOCK = 10


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
    list_display = ["sku", "name", "price", "stock_on_hand", "low_stock", "updated_at"]
    list_filter = [StockLevel]
    search_fields = ["sku", "name"]
    ordering = [F("stock_on_hand").asc(), "sku"]

    @admin.display(boolean=True, description="low stock")
    def low_stock(self, product):
        return product.stock_on_hand < LOW_STOCK


@admin.register(StockDecision)
class StockDecisionAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "outcome", "decided_at", "updated_at"]
    list_filter = ["outcome", "decided_at"]
    search_fields = ["order_id"]
    date_hierarchy = "decided_at"


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "product", "quantity", "created_at", "released_at"]
    list_filter = ["released_at"]
    search_fields = ["order_id", "product__sku"]
    list_select_related = ["product"]
