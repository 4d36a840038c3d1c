"""Reads other apps may make of the catalogue (in-process, never through the tables)."""

from decimal import Decimal

from .models import Product


def product_prices(skus: list[str]) -> dict[str, Decimal]:
    """SKU -> current price, for the SKUs that exist."""
    return dict(Product.objects.filter(sku__in=skus).values_list("sku", "price"))
