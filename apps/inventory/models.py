from django.db import models
from django.db.models import Q


class Product(models.Model):
    """A catalogue entry and its stock on hand. Prices are in the platform currency."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    stock_on_hand = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            # The last line of defence against overselling: the database refuses negative stock.
            models.CheckConstraint(condition=Q(stock_on_hand__gte=0), name="product_stock_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class StockDecision(models.Model):
    """What inventory decided for an order, once: the database keeps a second event for the
    same order (a duplicate producer, a cancellation that overtook the order) from acting twice."""

    class Outcome(models.TextChoices):
        RESERVED = "reserved"
        REJECTED = "rejected"
        RELEASED = "released"
        CANCELLED_FIRST = "cancelled_first", "cancelled before it was seen"

    order_id = models.CharField(max_length=100, primary_key=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    decided_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.order_id}: {self.outcome}"


class Reservation(models.Model):
    order_id = models.CharField(max_length=100)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="reservations")
    quantity = models.PositiveIntegerField()
    released_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order_id", "product"], name="reservation_once_per_order_sku")]
        indexes = [models.Index(fields=["order_id"], name="reservation_order_idx")]

    def __str__(self) -> str:
        return f"{self.order_id} {self.product_id} x{self.quantity}"
