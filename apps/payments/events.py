"""Contracts the payments app publishes."""

from pydantic import Field

from apps.eventbus.contracts import Event
from apps.eventbus.money import Money


class PaymentCompleted(Event):
    subject = "payments.completed.v1"
    order_id: str
    payment_id: str
    amount: Money
    currency: str
    gateway_charge_id: str


class PaymentFailed(Event):
    subject = "payments.failed.v1"
    order_id: str
    reason: str = Field(max_length=500)
    decline_code: str | None = None


class PaymentRefunded(Event):
    subject = "payments.refunded.v1"
    order_id: str
    payment_id: str
    amount: Money
    currency: str
    gateway_refund_id: str
