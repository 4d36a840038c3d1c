from django.core.management.base import BaseCommand

from apps.inventory.catalogue import DEMO_PRODUCTS
from apps.inventory.services import product_ensure


class Command(BaseCommand):
    help = "Add the demo products that are missing (existing products, and their stock, are left alone)."

    def handle(self, *args, **options):
        created = sum(
            product_ensure(sku=sku, name=name, price=price, stock_on_hand=stock)[1]
            for sku, name, price, stock in DEMO_PRODUCTS
        )
        self.stdout.write(f"catalogue: {created} product(s) added, {len(DEMO_PRODUCTS) - created} already present")
