"""The saga: payment and stock outcomes move an order on, a whole batch of them at once."""

from apps.eventbus.registry import batch_handler
from apps.inventory.events import InventoryRejected, InventoryReserved
from apps.payments.events import PaymentCompleted, PaymentFailed

from . import services
from .services import Outcome, OutcomeKind

OutcomeEvent = PaymentCompleted | PaymentFailed | InventoryReserved | InventoryRejected


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
    raise TypeError(f"not a saga outcome: {type(event).__name__}")
