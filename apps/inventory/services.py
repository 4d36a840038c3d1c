from decimal import Decimal

from django.db import transaction

from .models import Product


@transaction.atomic
def product_ensure(*, sku: str, name: str, price: Decimal, stock_on_hand: int) -> tuple[Product, bool]:
    """Create the product unless its SKU exists; an existing product is left as it is.

    Returns the product and whether it was created.
    """
    return Product.objects.get_or_create(
        sku=sku, defaults={"name": name, "price": price, "stock_on_hand": stock_on_hand}
    )
