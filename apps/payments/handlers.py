"""Payments' reactions to order events: each calls one service."""

from apps.orders.events import OrderCancelled, OrderCreated

from .services import payment_capture, payment_refund_for_cancellation


def on_order_created(event: OrderCreated) -> None:
    payment_capture(
        order_id=event.order_id, amount=event.total_amount, currency=event.currency, causation_id=event.message_id
    )


def on_order_cancelled(event: OrderCancelled) -> None:
    payment_refund_for_cancellation(order_id=event.order_id, causation_id=event.message_id)
