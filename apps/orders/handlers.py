"""The saga: payment and stock outcomes move an order on, a whole batch of them at once; a step
that gives up on an order (dead-letters its ``orders.created.v1``) ends it."""

from __future__ import annotations

from apps.eventbus.bounds import truncate
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.deadletters.codec import DeadLetterHeaders
from apps.eventbus.registry import DLQ_PREFIX, batch_handler
from apps.inventory.events import InventoryRejected, InventoryReleased, InventoryReserved
from apps.payments.events import PaymentCompleted, PaymentFailed, PaymentRefunded

from . import services
from .events import OrderCreated
from .models import Order
from .services import Outcome, OutcomeKind, SagaStep

OutcomeEvent = (
    PaymentCompleted | PaymentFailed | PaymentRefunded | InventoryReserved | InventoryRejected | InventoryReleased
)

MAX_REASON = Order._meta.get_field("cancel_reason").max_length
MAX_ORDER_ID = 100


@batch_handler
def on_outcomes(events: list[OutcomeEvent]) -> None:
    services.order_outcomes_record(outcomes=[outcome_of(event) for event in events])


def outcome_of(event: OutcomeEvent) -> Outcome:
    envelope = {"order_id": event.order_id, "subject": event.subject, "causation_id": event.message_id}
    match event:
        case PaymentCompleted():
            return Outcome(kind=OutcomeKind.PAYMENT_CAPTURED, payment_id=event.payment_id, **envelope)
        case PaymentFailed():
            return Outcome(kind=OutcomeKind.PAYMENT_FAILED, reason=f"payment failed: {event.reason}", **envelope)
        case InventoryReserved():
            return Outcome(kind=OutcomeKind.STOCK_RESERVED, **envelope)
        case InventoryRejected():
            short = ", ".join(f"{line.sku} ({line.reason})" for line in event.lines)
            return Outcome(kind=OutcomeKind.STOCK_REJECTED, reason=f"stock rejected: {short}", **envelope)
        case PaymentRefunded():
            return Outcome(kind=OutcomeKind.PAYMENT_REFUNDED, **envelope)
        case InventoryReleased():
            return Outcome(kind=OutcomeKind.STOCK_RELEASED, **envelope)
    raise TypeError(f"not a saga outcome: {type(event).__name__}")


@batch_handler
def on_step_dead_lettered(deliveries: list[Delivery]) -> None:
    """Dead letters of the saga's steps (raw deliveries from ``dlq.<step>``): each one that is
    about an order's ``orders.created.v1`` ends that order if it is still PENDING."""
    outcomes = [outcome for delivery in deliveries if (outcome := step_failure_of(delivery)) is not None]
    if outcomes:
        services.order_outcomes_record(outcomes=outcomes)


def step_failure_of(delivery: Delivery) -> Outcome | None:
    """The STEP_FAILED outcome a dead letter stands for, or None: not a dead letter the eventbus
    published for a saga step, not of an ``orders.created.v1`` (a failed compensation concerns
    an order decided already), or a body that names no order."""
    try:
        step = SagaStep(delivery.subject.removeprefix(f"{DLQ_PREFIX}."))  # dlq.<step>, also when redelivered
    except ValueError:
        return None
    dead_letter = DeadLetterHeaders.decode(delivery.headers)
    if dead_letter.consumer != step or dead_letter.subject != OrderCreated.subject:
        return None
    order_id = delivery.field("order_id")
    if not 0 < len(order_id) <= MAX_ORDER_ID or not order_id.isprintable():
        return None
    error_type = _printable(dead_letter.error_type) or "unknown error"
    error = _printable(dead_letter.error)
    reason = f"{step} gave up on the order (dead letter): {error_type}" + (f": {error}" if error else "")
    return Outcome(
        order_id,
        OutcomeKind.STEP_FAILED,
        delivery.subject,
        delivery.ledger_key,
        reason=truncate(reason, MAX_REASON),
        step=step,
    )


def _printable(text: str) -> str:
    """One line of printable text (headers come from elsewhere: no control characters, NUL included)."""
    return " ".join("".join(char if char.isprintable() else " " for char in text).split())
