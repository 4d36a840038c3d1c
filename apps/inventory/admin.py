from django.contrib import admin

from .models import Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price", "stock_on_hand", "updated_at"]
    search_fields = ["sku", "name"]
    ordering = ["sku"]
