"""The order lifecycle: placing, the saga's transitions (a batch of outcomes at once), customer cancellation."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import Counter, Histogram

from apps.eventbus.bounds import clean_text, log_value
from apps.eventbus.contracts import Event
from apps.eventbus.events import actor_fields
from apps.eventbus.producing.outbox import outbox_write, outbox_write_many
from apps.inventory.selectors import product_prices

from .errors import InvalidOrder, InvalidTransition, OrderNotFound, UnknownSku
from .events import (
    OrderCancelled,
    OrderCancelledByOperator,
    OrderConfirmed,
    OrderCreated,
    OrderRefundRequested,
    OrderRefundRequestedByOperator,
)
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
ORDERS_ENDED_BY_DEAD_LETTER = Counter(
    "orders_ended_by_dead_letter",
    "PENDING orders cancelled because a saga step dead-lettered their orders.created.v1",
    ["step"],
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


class OutcomeKind(StrEnum):
    PAYMENT_CAPTURED = "payment_captured"
    PAYMENT_FAILED = "payment_failed"
    STOCK_RESERVED = "stock_reserved"
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_REFUNDED = "payment_refunded"  # compensation (or an operator's refund) done by payments
    STOCK_RELEASED = "stock_released"  # compensation done by inventory
    STEP_FAILED = "step_failed"  # a step gave up on the order (it dead-lettered orders.created.v1)


class SagaStep(StrEnum):
    """The saga's steps, by the name of the consumer that takes them."""

    PAYMENT = "payments"
    STOCK = "inventory"


# What the order has heard from each step when that step succeeded.
_STEP_SUCCEEDED = {
    SagaStep.PAYMENT: ("payment_state", Order.PaymentState.CAPTURED),
    SagaStep.STOCK: ("stock_state", Order.StockState.RESERVED),
}


# How far each step's state has gone: outcomes arrive in any order (each stream is read on its
# own), and a late capture must not hide the refund that followed it, nor a late reservation
# the release. An outcome never moves a state back to a lower rank.
_RANK = {
    Order.PaymentState.UNKNOWN: 0,
    Order.PaymentState.CAPTURED: 1,
    Order.PaymentState.FAILED: 1,
    Order.PaymentState.REFUNDED: 2,
    Order.StockState.UNKNOWN: 0,
    Order.StockState.RESERVED: 1,
    Order.StockState.REJECTED: 1,
    Order.StockState.RELEASED: 2,
}


def _moves_on(current: str, heard: str) -> bool:
    """Whether a fact heard changes the order: a state only forward (by ``_RANK``), anything else when it differs."""
    if current == heard:
        return False
    return heard not in _RANK or current not in _RANK or _RANK[heard] >= _RANK[current]


@dataclass(frozen=True)
class Outcome:
    """What a step of the saga told the order: one payment or stock outcome event, or the dead
    letter of a step that gave up on the order (``STEP_FAILED``, with its ``step``)."""

    order_id: str
    kind: OutcomeKind
    subject: str
    causation_id: str
    payment_id: str = ""
    reason: str = ""
    step: SagaStep | None = None

    def facts(self) -> dict[str, str]:
        match self.kind:
            case OutcomeKind.PAYMENT_CAPTURED:
                return {"payment_state": Order.PaymentState.CAPTURED, "payment_id": self.payment_id}
            case OutcomeKind.PAYMENT_FAILED:
                return {"payment_state": Order.PaymentState.FAILED}
            case OutcomeKind.STOCK_RESERVED:
                return {"stock_state": Order.StockState.RESERVED}
            case OutcomeKind.STOCK_REJECTED:
                return {"stock_state": Order.StockState.REJECTED}
            case OutcomeKind.PAYMENT_REFUNDED:
                return {"payment_state": Order.PaymentState.REFUNDED}
            case OutcomeKind.STOCK_RELEASED:
                return {"stock_state": Order.StockState.RELEASED}
            case OutcomeKind.STEP_FAILED:
                return {}  # nothing was heard from the step: it failed before it decided

    def step_already_succeeded(self, order: Order) -> bool:
        """A failed step the order has heard succeed: a late dead letter of a message it handled."""
        name, value = _STEP_SUCCEEDED[self.step]
        return getattr(order, name) == value


def order_outcomes_record(*, outcomes: list[Outcome]) -> list[Order | None]:
    """Remember each outcome, in order, and move each order's saga on when it can. Call inside a transaction.

    Every order of the batch is locked at once, in primary-key order; the changed orders are
    written with one UPDATE and their decisions with one outbox INSERT, whatever the batch's
    size. Outcomes for orders this platform did not create are counted and skipped. A
    ``STEP_FAILED`` outcome cancels a PENDING order (compensation follows its
    ``orders.cancelled.v1``) unless the order has heard that step succeed; it leaves a decided
    order alone. Returns the order of each outcome (None for those skipped), in the order of
    ``outcomes``.
    """
    orders = _locked_many([outcome.order_id for outcome in outcomes])
    changed: dict[uuid.UUID, Order] = {}
    fields: dict[str, None] = {}  # an ordered set
    events: list[Event] = []
    recorded: list[Order | None] = []
    for outcome in outcomes:
        order = orders.get(_order_pk(outcome.order_id))
        recorded.append(order)
        if order is None:
            UNKNOWN_ORDER_OUTCOMES.labels(outcome.subject).inc()
            logger.info(
                "outcome %s for an order this platform did not create: %s", outcome.subject, log_value(outcome.order_id)
            )
            continue
        facts = {name: value for name, value in outcome.facts().items() if _moves_on(getattr(order, name), value)}
        for name, value in facts.items():
            setattr(order, name, value)
        if facts:
            changed[order.pk] = order
            fields.update(dict.fromkeys(facts))
        if order.status != Order.Status.PENDING:
            continue  # a late or repeated outcome; a cancelled order's capture is refunded by payments
        if outcome.kind == OutcomeKind.STEP_FAILED:
            if outcome.step_already_succeeded(order):
                logger.info("ignoring a late dead letter of %s for order %s: it succeeded", outcome.step, order.pk)
                continue
            reason = outcome.reason or f"{outcome.step} failed"
            decision = _transition(order, Order.Status.CANCELLED, reason=reason, causation_id=outcome.causation_id)
            transaction.on_commit(ORDERS_ENDED_BY_DEAD_LETTER.labels(outcome.step).inc)
        elif order.payment_state == Order.PaymentState.FAILED or order.stock_state == Order.StockState.REJECTED:
            reason = outcome.reason or "a step of the order failed"
            decision = _transition(order, Order.Status.CANCELLED, reason=reason, causation_id=outcome.causation_id)
        elif order.payment_state == Order.PaymentState.CAPTURED and order.stock_state == Order.StockState.RESERVED:
            decision = _transition(order, Order.Status.CONFIRMED, causation_id=outcome.causation_id)
        else:
            continue
        changed[order.pk] = order
        fields.update(dict.fromkeys(decision.fields))
        events.append(decision.event)
    if changed:
        _save_saga_state(list(changed.values()))
    outbox_write_many(events)
    return recorded


# The saga's columns of changed orders in one statement (Django's bulk_update builds a CASE
# per column and row in Python: it cost more than the rest of a batch).
_SAVE_SAGA_STATE = f"""
    UPDATE {Order._meta.db_table} AS o
    SET status = c.status, payment_state = c.payment_state, payment_id = c.payment_id,
        stock_state = c.stock_state, cancel_reason = c.cancel_reason, decided_at = c.decided_at,
        updated_at = c.updated_at
    FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
                %s::timestamptz[])
        AS c(id, status, payment_state, payment_id, stock_state, cancel_reason, decided_at, updated_at)
    WHERE o.id = c.id
"""


def _save_saga_state(orders: list[Order]) -> None:
    now = timezone.now()
    for order in orders:
        order.updated_at = now
    columns = (
        "pk",
        "status",
        "payment_state",
        "payment_id",
        "stock_state",
        "cancel_reason",
        "decided_at",
        "updated_at",
    )
    with connection.cursor() as cursor:
        cursor.execute(_SAVE_SAGA_STATE, [[getattr(order, column) for order in orders] for column in columns])


@transaction.atomic
def order_payment_captured(*, order_id: str, payment_id: str, subject: str, causation_id: str) -> Order | None:
    """One outcome through ``order_outcomes_record``."""
    outcome = Outcome(order_id, OutcomeKind.PAYMENT_CAPTURED, subject, causation_id, payment_id=payment_id)
    return order_outcomes_record(outcomes=[outcome])[0]


@transaction.atomic
def order_payment_failed(*, order_id: str, reason: str, subject: str, causation_id: str) -> Order | None:
    """One outcome through ``order_outcomes_record``."""
    outcome = Outcome(order_id, OutcomeKind.PAYMENT_FAILED, subject, causation_id, reason=reason)
    return order_outcomes_record(outcomes=[outcome])[0]


@transaction.atomic
def order_stock_reserved(*, order_id: str, subject: str, causation_id: str) -> Order | None:
    """One outcome through ``order_outcomes_record``."""
    return order_outcomes_record(outcomes=[Outcome(order_id, OutcomeKind.STOCK_RESERVED, subject, causation_id)])[0]


@transaction.atomic
def order_stock_rejected(*, order_id: str, reason: str, subject: str, causation_id: str) -> Order | None:
    """One outcome through ``order_outcomes_record``."""
    outcome = Outcome(order_id, OutcomeKind.STOCK_REJECTED, subject, causation_id, reason=reason)
    return order_outcomes_record(outcomes=[outcome])[0]


@transaction.atomic
def order_step_failed(*, order_id: str, step: SagaStep, reason: str, subject: str, causation_id: str) -> Order | None:
    """One outcome through ``order_outcomes_record``."""
    outcome = Outcome(order_id, OutcomeKind.STEP_FAILED, subject, causation_id, reason=reason, step=step)
    return order_outcomes_record(outcomes=[outcome])[0]


@transaction.atomic
def order_cancel(*, order_id: str, reason: str, causation_id: str | None = None) -> Order:
    """A customer's cancellation: PENDING or CONFIRMED -> CANCELLED (refund and release follow)."""
    order = _locked(order_id)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    decision = _transition(order, Order.Status.CANCELLED, reason=reason, causation_id=causation_id)
    order.save(update_fields=decision.fields)
    outbox_write(decision.event)
    return order


MAX_REASON = 500


def order_cancel_as_operator(*, order_id: str, reason: str, actor, expected_status: str | None = None) -> Order:
    """An operator's cancellation (``actor`` None: the platform's stuck-orders policy):
    PENDING or CONFIRMED -> CANCELLED, with ``orders.cancelled.v1`` (payments refunds what it
    captured, inventory releases what it reserved, each exactly once) and
    ``operator.order_cancelled.v1`` naming who and why, in one transaction.

    ``expected_status``: the status the caller decided on (the page the operator read, the
    PENDING order the policy found); the saga may have moved the order on since, and then
    nothing is done. Raises :class:`OrderNotFound`, :class:`InvalidTransition` (cancelled
    already, or no longer ``expected_status``), or :class:`InvalidOrder` (no reason)."""
    reason = _operator_reason(reason)
    with transaction.atomic():
        order = _locked(order_id)
        if order is None:
            raise OrderNotFound(f"no order {order_id}")
        if expected_status is not None and order.status != expected_status:
            raise InvalidTransition(f"order {order.pk} is {order.status} now, no longer {expected_status}")
        # The action first: the cancellation it causes occurs after it (the timeline's order).
        action = OrderCancelledByOperator(
            order_id=str(order.pk), reason=reason, status_before=order.status, correlation_id=str(order.pk),
            **actor_fields(actor),
        )  # fmt: skip
        decision = _transition(order, Order.Status.CANCELLED, reason=reason, causation_id=action.message_id)
        order.save(update_fields=decision.fields)
        outbox_write_many([action, decision.event])
    return order


def order_refund_as_operator(*, order_id: str, reason: str, actor) -> Order:
    """An operator refunds a CONFIRMED order whose payment was captured: the order stays
    CONFIRMED (the customer keeps the goods, stock is not released) and payments refunds the
    whole amount once (``orders.refund_requested.v1``); ``operator.order_refund_requested.v1``
    names who and why. The order's payment_state becomes REFUNDED when payments says so.
    Raises :class:`InvalidTransition` when the order is not CONFIRMED, nothing was charged,
    or a refund was asked for already."""
    reason = _operator_reason(reason)
    with transaction.atomic():
        order = _locked(order_id)
        if order is None:
            raise OrderNotFound(f"no order {order_id}")
        if order.status != Order.Status.CONFIRMED:
            raise InvalidTransition(f"order {order.pk} is {order.status}; only a CONFIRMED order is refunded")
        if order.refund_requested_at is not None or order.payment_state == Order.PaymentState.REFUNDED:
            raise InvalidTransition(f"order {order.pk}: a refund was asked for already")
        if order.payment_state != Order.PaymentState.CAPTURED or order.total_amount == 0:
            raise InvalidTransition(f"order {order.pk}: nothing was charged, so nothing is refunded")
        order.refund_requested_at, order.refund_reason = timezone.now(), reason
        order.save(update_fields=["refund_requested_at", "refund_reason", "updated_at"])
        action = OrderRefundRequestedByOperator(
            order_id=str(order.pk), reason=reason, status_before=order.status, amount=order.total_amount,
            currency=order.currency, correlation_id=str(order.pk), **actor_fields(actor),
        )  # fmt: skip
        request = OrderRefundRequested(
            order_id=str(order.pk), reason=reason, correlation_id=str(order.pk), causation_id=action.message_id
        )
        outbox_write_many([action, request])
    return order


def _operator_reason(reason: str) -> str:
    """One line of printable text, 1..500 characters: it goes into a column, the audit log and events."""
    text = clean_text(" ".join(str(reason)[: MAX_REASON * 4].split()), single_line=True)
    if not text:
        raise InvalidOrder("say why (a reason is required)", fields={"reason": "required"})
    if len(text) > MAX_REASON:
        raise InvalidOrder(f"the reason is longer than {MAX_REASON} characters", fields={"reason": "too long"})
    return text


@dataclass(frozen=True)
class _Decision:
    fields: list[str]  # what the transition changed on the order, to be saved with it
    event: Event  # to be written with the order


def _transition(order: Order, status: str, *, reason: str = "", causation_id: str | None) -> _Decision:
    """Move the order to ``status`` in memory; the caller saves it and writes the event."""
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
        cancelled = OrderCancelled(
            order_id=str(order.id), reason=order.cancel_reason, currency=order.currency, **envelope
        )
        return _Decision([*fields, "cancel_reason"], cancelled)
    return _Decision(
        fields,
        OrderConfirmed(
            order_id=str(order.id),
            payment_id=order.payment_id,
            total_amount=order.total_amount,
            currency=order.currency,
            **envelope,
        ),
    )


def _order_pk(order_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(order_id))
    except ValueError:
        return None  # not an id this platform issues


def _locked_many(order_ids: list[str]) -> dict[uuid.UUID, Order]:
    """Lock the orders that exist among ``order_ids``, in primary-key order (one statement)."""
    pks = {pk for pk in map(_order_pk, order_ids) if pk is not None}
    if not pks:
        return {}
    return {order.pk: order for order in Order.objects.select_for_update().filter(pk__in=pks).order_by("pk")}


def _locked(order_id: str) -> Order | None:
    pk = _order_pk(order_id)
    return None if pk is None else Order.objects.select_for_update().filter(pk=pk).first()
