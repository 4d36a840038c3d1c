import uuid

from django.db import models
from django.db.models import Q


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        CONFIRMED = "CONFIRMED"
        CANCELLED = "CANCELLED"

    class PaymentState(models.TextChoices):
        UNKNOWN = "unknown"
        CAPTURED = "captured"
        FAILED = "failed"
        REFUNDED = "refunded"  # payments.refunded.v1: the captured amount went back to the customer

    class StockState(models.TextChoices):
        UNKNOWN = "unknown"
        RESERVED = "reserved"
        REJECTED = "rejected"
        RELEASED = "released"  # inventory.released.v1: what was reserved is back on the shelf

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer_id = models.CharField(max_length=100, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    total_amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    # What the saga has heard so far; outcomes arrive in any order and more than once.
    payment_state = models.CharField(max_length=10, choices=PaymentState.choices, default=PaymentState.UNKNOWN)
    payment_id = models.CharField(max_length=100, blank=True)
    stock_state = models.CharField(max_length=10, choices=StockState.choices, default=StockState.UNKNOWN)
    cancel_reason = models.CharField(max_length=500, blank=True)
    # An operator asked payments to refund this CONFIRMED order (it stays CONFIRMED: the customer
    # keeps the goods); payment_state becomes REFUNDED when payments.refunded.v1 is heard.
    refund_requested_at = models.DateTimeField(null=True, blank=True)
    refund_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the saga first left PENDING (CONFIRMED or CANCELLED): placed -> decided is the saga's latency.
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(total_amount__gte=0), name="order_total_not_negative")]
        # Only undecided orders: keeps the stuck-orders gauge (apps/orders/monitoring.py) cheap.
        indexes = [models.Index(fields=["created_at"], name="orders_pending_created", condition=Q(status="PENDING"))]
        permissions = [
            ("cancel_order", "Can cancel an order (payments refunds and inventory releases what it holds)"),
            ("refund_order", "Can refund a confirmed order (it stays confirmed)"),
        ]

    def __str__(self) -> str:
        return f"order {self.id} {self.status}"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "sku"], name="order_line_once_per_sku"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} x{self.quantity}"
