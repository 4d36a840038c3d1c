"""Inventory's reactions to order events: each calls one service."""

from apps.eventbus.registry import batch_handler
from apps.orders.events import OrderCancelled, OrderCreated

from .services import ReserveRequest, stock_release, stock_reserve_many


@batch_handler
def on_order_created(events: list[OrderCreated]) -> None:
    stock_reserve_many(
        requests=[
            ReserveRequest(
                order_id=event.order_id,
                lines=tuple((line.sku, line.quantity) for line in event.lines),
                causation_id=event.message_id,
            )
            for event in events
        ]
    )


def on_order_cancelled(event: OrderCancelled) -> None:
    stock_release(order_id=event.order_id, causation_id=event.message_id)
