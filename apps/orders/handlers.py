"""The saga: payment and stock outcomes move an order on. Each handler calls one service."""

from apps.inventory.events import InventoryRejected, InventoryReserved
from apps.payments.events import PaymentCompleted, PaymentFailed

from . import services


def on_payment_completed(event: PaymentCompleted) -> None:
    services.order_payment_captured(
        order_id=event.order_id, payment_id=event.payment_id, subject=event.subject, causation_id=event.message_id
    )


def on_payment_failed(event: PaymentFailed) -> None:
    services.order_payment_failed(
        order_id=event.order_id, reason=f"payment failed: {event.reason}", subject=event.subject,
        causation_id=event.message_id,
    )  # fmt: skip


def on_inventory_reserved(event: InventoryReserved) -> None:
    services.order_stock_reserved(order_id=event.order_id, subject=event.subject, causation_id=event.message_id)


def on_inventory_rejected(event: InventoryRejected) -> None:
    short = ", ".join(f"{line.sku} ({line.reason})" for line in event.lines)
    services.order_stock_rejected(
        order_id=event.order_id, reason=f"stock rejected: {short}", subject=event.subject,
        causation_id=event.message_id,
    )  # fmt: skip
