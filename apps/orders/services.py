"""The order lifecycle: placing, the saga's transitions, customer cancellation."""

from __future__ import annotations

import logging
import time
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter, Histogram

from apps.eventbus.outbox import outbox_write
from apps.inventory.selectors import product_prices

from .errors import InvalidOrder, InvalidTransition, OrderNotFound, UnknownSku
from .events import OrderCancelled, OrderConfirmed, OrderCreated
from .events import OrderLine as OrderLineContract
from .models import Order, OrderLine

logger = logging.getLogger(__name__)

MAX_LINES = 50
MAX_QUANTITY = 1000
TRANSITIONS = {
    Order.Status.PENDING: {Order.Status.CONFIRMED, Order.Status.CANCELLED},
    Order.Status.CONFIRMED: {Order.Status.CANCELLED},
    Order.Status.CANCELLED: set(),
}
UNKNOWN_ORDER_OUTCOMES = Counter(
    "orders_unknown_order_outcomes", "Outcomes for orders this platform did not create (acknowledged)", ["subject"]
)
SAGA_DURATION = Histogram(
    "order_saga_duration_seconds",
    "From an order placed to the saga's decision (CONFIRMED or CANCELLED), observed once the decision commits",
    ["outcome"],
    buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.35, 0.45, 0.6, 0.8, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def order_place(*, customer_id: str, lines: list[tuple[str, int]]) -> Order:
    """Price the lines from the catalogue, write the order and ``orders.created.v1`` together."""
    if not lines:
        raise InvalidOrder("an order needs at least one line", fields={"lines": "empty"})
    if len(lines) > MAX_LINES:
        raise InvalidOrder(f"at most {MAX_LINES} lines", fields={"lines": "too many"})
    skus = [sku for sku, _ in lines]
    if len(set(skus)) != len(skus):
        raise InvalidOrder("each SKU may appear once", fields={"lines": "duplicate sku"})
    for sku, quantity in lines:
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidOrder(f"quantity of {sku} must be 1..{MAX_QUANTITY}", fields={sku: "invalid quantity"})
    prices = product_prices(skus)
    unknown = [sku for sku in skus if sku not in prices]
    if unknown:
        raise UnknownSku(f"unknown SKU(s): {', '.join(unknown)}", fields=dict.fromkeys(unknown, "unknown"))
    total = sum((prices[sku] * quantity for sku, quantity in lines), Decimal("0"))
    with transaction.atomic():
        order = Order.objects.create(customer_id=customer_id, total_amount=total, currency=settings.PLATFORM_CURRENCY)
        OrderLine.objects.bulk_create(
            OrderLine(order=order, sku=sku, quantity=quantity, unit_price=prices[sku]) for sku, quantity in lines
        )
        outbox_write(
            OrderCreated(
                order_id=str(order.id),
                customer_id=customer_id,
                total_amount=total,
                currency=order.currency,
                lines=tuple(
                    OrderLineContract(sku=sku, quantity=quantity, unit_price=prices[sku]) for sku, quantity in lines
                ),
                created_at=int(time.time() * 1000),
                correlation_id=str(order.id),
            )
        )
    return order


def order_payment_captured(*, order_id: str, payment_id: str, subject: str, causation_id: str) -> Order | None:
    return _record(order_id, subject, causation_id, payment_state=Order.PaymentState.CAPTURED, payment_id=payment_id)


def order_payment_failed(*, order_id: str, reason: str, subject: str, causation_id: str) -> Order | None:
    return _record(order_id, subject, causation_id, payment_state=Order.PaymentState.FAILED, reason=reason)


def order_stock_reserved(*, order_id: str, subject: str, causation_id: str) -> Order | None:
    return _record(order_id, subject, causation_id, stock_state=Order.StockState.RESERVED)


def order_stock_rejected(*, order_id: str, reason: str, subject: str, causation_id: str) -> Order | None:
    return _record(order_id, subject, causation_id, stock_state=Order.StockState.REJECTED, reason=reason)


@transaction.atomic
def order_cancel(*, order_id: str, reason: str, causation_id: str | None = None) -> Order:
    """A customer's cancellation: PENDING or CONFIRMED -> CANCELLED (refund and release follow)."""
    order = _locked(order_id)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    _transition(order, Order.Status.CANCELLED, reason=reason, causation_id=causation_id)
    return order


@transaction.atomic
def _record(order_id: str, subject: str, causation_id: str, *, reason: str = "", **facts) -> Order | None:
    """Remember an outcome, then move the saga on if it can. Call from a handler."""
    order = _locked(order_id)
    if order is None:
        UNKNOWN_ORDER_OUTCOMES.labels(subject).inc()
        logger.info("outcome %s for an order this platform did not create: %s", subject, order_id)
        return None
    for name, value in facts.items():
        setattr(order, name, value)
    order.save(update_fields=[*facts, "updated_at"])
    if order.status != Order.Status.PENDING:
        return order  # a late or repeated outcome; a cancelled order's capture is refunded by payments
    if order.payment_state == Order.PaymentState.FAILED or order.stock_state == Order.StockState.REJECTED:
        reason = reason or "a step of the order failed"
        _transition(order, Order.Status.CANCELLED, reason=reason, causation_id=causation_id)
    elif order.payment_state == Order.PaymentState.CAPTURED and order.stock_state == Order.StockState.RESERVED:
        _transition(order, Order.Status.CONFIRMED, causation_id=causation_id)
    return order


def _transition(order: Order, status: str, *, reason: str = "", causation_id: str | None) -> None:
    if status not in TRANSITIONS[order.status]:
        raise InvalidTransition(f"order {order.id} is {order.status}; it cannot become {status}")
    decided = order.status == Order.Status.PENDING
    order.status = status
    fields = ["status", "updated_at"]
    if decided:
        order.decided_at = timezone.now()
        fields.append("decided_at")
        elapsed = (order.decided_at - order.created_at).total_seconds()
        outcome = status.lower()
        transaction.on_commit(lambda: SAGA_DURATION.labels(outcome).observe(elapsed))
    envelope = {"correlation_id": str(order.id), "causation_id": causation_id}
    if status == Order.Status.CANCELLED:
        order.cancel_reason = reason[:500]
        order.save(update_fields=[*fields, "cancel_reason"])
        outbox_write(OrderCancelled(order_id=str(order.id), reason=order.cancel_reason, **envelope))
    else:
        order.save(update_fields=fields)
        outbox_write(
            OrderConfirmed(
                order_id=str(order.id),
                payment_id=order.payment_id,
                total_amount=order.total_amount,
                currency=order.currency,
                **envelope,
            )
        )


def _locked(order_id: str) -> Order | None:
    try:
        pk = uuid.UUID(str(order_id))
    except ValueError:
        return None  # not an id this platform issues
    return Order.objects.select_for_update().filter(pk=pk).first()
