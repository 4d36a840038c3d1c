"""Contracts the orders app publishes."""

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, field_validator

from apps.eventbus.contracts import Event
from apps.eventbus.events import OperatorAction
from apps.eventbus.money import Money


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=10_000)
    unit_price: Money


class OrderCreated(Event):
    """An order was placed. Other producers send the minimal form ``{message_id, order_id,
    customer_id, total_amount, created_at}`` with ``total_amount`` as a JSON number: the
    currency then defaults to the platform's and no lines means nothing to reserve."""

    subject = "orders.created.v1"
    order_id: str = Field(min_length=1, max_length=100)
    customer_id: str = Field(min_length=1, max_length=100)
    total_amount: Money
    currency: str = Field(default_factory=lambda: settings.PLATFORM_CURRENCY, pattern=r"^[A-Z]{3}$")
    lines: tuple[OrderLine, ...] = ()
    created_at: int = Field(ge=0, description="epoch milliseconds")

    @field_validator("order_id", "customer_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value):
        return str(value) if isinstance(value, int) else value


class OrderConfirmed(Event):
    subject = "orders.confirmed.v1"
    order_id: str
    payment_id: str
    total_amount: Money
    currency: str


class OrderCancelled(Event):
    """The order will not be fulfilled: inventory releases what it reserved, payments refunds
    what it captured. ``currency`` is the order's (the platform's when an older producer left it out)."""

    subject = "orders.cancelled.v1"
    order_id: str
    reason: str = Field(max_length=500)
    currency: str = Field(default_factory=lambda: settings.PLATFORM_CURRENCY, pattern=r"^[A-Z]{3}$")


class OrderRefundRequested(Event):
    """An operator refunds a CONFIRMED order: payments gives back what it captured (once: the
    provider's idempotency key is the order's); the order stays CONFIRMED (the customer keeps
    the goods, stock is not released)."""

    subject = "orders.refund_requested.v1"
    order_id: str = Field(min_length=1, max_length=100)
    reason: str = Field(max_length=500)


class OrderOperatorAction(OperatorAction):
    """An operator (or the platform's stuck-orders policy: no actor) acted on an order; the
    event's ``correlation_id`` is the order's id, so it shows on the order's timeline."""

    order_id: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=500)
    status_before: str = Field(max_length=10)


class OrderCancelledByOperator(OrderOperatorAction):
    subject = "operator.order_cancelled.v1"


class OrderRefundRequestedByOperator(OrderOperatorAction):
    subject = "operator.order_refund_requested.v1"
    amount: Money
    currency: str = Field(pattern=r"^[A-Z]{3}$")
