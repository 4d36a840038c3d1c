"""Payments' reactions to order events. The provider is called before the batch's
transaction (``prepare``), many orders at once; the handlers record its answers."""

from apps.eventbus.registry import batch_handler
from apps.orders.events import OrderCancelled, OrderCreated, OrderRefundRequested

from .services import (
    ChargeAnswer,
    ChargeRequest,
    payment_charges_record,
    payment_charges_request,
    payment_refund_for_cancellation,
    payment_refund_requested,
    payment_refunds_request,
)


def charge_orders(events: list[OrderCreated]) -> dict:
    return payment_charges_request(
        requests=[ChargeRequest(event.order_id, event.total_amount, event.currency) for event in events]
    )


def refund_orders(events: list[OrderCancelled] | list[OrderRefundRequested]) -> dict:
    return payment_refunds_request(order_ids=[event.order_id for event in events])


@batch_handler(prepare=charge_orders)
def on_order_created(events: list[OrderCreated], answers: dict) -> None:
    payment_charges_record(
        answers=[ChargeAnswer(event.order_id, answers.get(event.order_id), event.message_id) for event in events]
    )


@batch_handler(prepare=refund_orders)
def on_order_cancelled(events: list[OrderCancelled], answers: dict) -> None:
    for event in events:
        payment_refund_for_cancellation(
            order_id=event.order_id,
            currency=event.currency,
            causation_id=event.message_id,
            answer=answers.get(event.order_id),
        )


@batch_handler(prepare=refund_orders)
def on_refund_requested(events: list[OrderRefundRequested], answers: dict) -> None:
    for event in events:
        payment_refund_requested(
            order_id=event.order_id, causation_id=event.message_id, answer=answers.get(event.order_id)
        )
