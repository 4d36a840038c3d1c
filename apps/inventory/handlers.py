"""Inventory's reactions to order events: each calls one service."""

from apps.orders.events import OrderCancelled, OrderCreated

from .services import stock_release, stock_reserve


def on_order_created(event: OrderCreated) -> None:
    stock_reserve(
        order_id=event.order_id,
        lines=[(line.sku, line.quantity) for line in event.lines],
        causation_id=event.message_id,
    )


def on_order_cancelled(event: OrderCancelled) -> None:
    stock_release(order_id=event.order_id, causation_id=event.message_id)
