from django.db import models


class Payment(models.Model):
    """One per order: the database refuses a second, so an order is charged at most once here too."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        CAPTURED = "CAPTURED"
        FAILED = "FAILED"
        REFUNDED = "REFUNDED"
        # A zero total: paid without asking the provider (nothing to charge, nothing to refund).
        NO_CHARGE = "NO_CHARGE", "No charge (zero total)"

    order_id = models.CharField(max_length=100, unique=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    gateway_charge_id = models.CharField(max_length=100, blank=True)
    gateway_refund_id = models.CharField(max_length=100, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"payment for {self.order_id}: {self.status}"
