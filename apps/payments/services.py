"""Charging and refunding, exactly once per order.

Both run inside the consumer's transaction and call the provider with an idempotency key
derived from the order: if the process dies after the provider answered and before the
commit, the redelivered event asks again with the same key and gets the first answer.
"""

from __future__ import annotations

from decimal import Decimal

from apps.eventbus.outbox import outbox_write
from orders_platform import failpoints

from . import gateway
from .events import PaymentCompleted, PaymentFailed, PaymentRefunded
from .models import Payment


def payment_capture(*, order_id: str, amount: Decimal, currency: str, causation_id: str) -> Payment:
    """Charge the order once. Call inside a transaction."""
    payment, _ = Payment.objects.select_for_update().get_or_create(
        order_id=order_id, defaults={"amount": amount, "currency": currency}
    )
    if payment.status != Payment.Status.PENDING:
        return payment  # decided already (or cancelled before it was charged)
    result = gateway.charge(idempotency_key=f"charge-{order_id}", amount=amount, currency=currency, reference=order_id)
    failpoints.hit("payments.after_charge", order_id)  # fault tests: die between the charge and the commit
    envelope = {"correlation_id": order_id, "causation_id": causation_id}
    if result.succeeded:
        payment.status, payment.gateway_charge_id = Payment.Status.CAPTURED, result.charge_id
        payment.save(update_fields=["status", "gateway_charge_id", "updated_at"])
        outbox_write(
            PaymentCompleted(
                order_id=order_id, payment_id=str(payment.pk), amount=amount, currency=currency,
                gateway_charge_id=result.charge_id, **envelope,
            )
        )  # fmt: skip
    else:
        payment.status, payment.failure_reason = Payment.Status.FAILED, f"declined: {result.decline_code}"
        payment.save(update_fields=["status", "failure_reason", "updated_at"])
        outbox_write(
            PaymentFailed(
                order_id=order_id, reason=payment.failure_reason, decline_code=result.decline_code, **envelope
            )
        )
    return payment


def payment_refund_for_cancellation(*, order_id: str, causation_id: str) -> Payment | None:
    """Refund a captured payment of a cancelled order, once; stop a charge that has not happened.
    Call inside a transaction."""
    payment, created = Payment.objects.select_for_update().get_or_create(
        order_id=order_id,
        defaults={"amount": 0, "currency": "", "status": Payment.Status.FAILED, "failure_reason": "order cancelled"},
    )
    if created:
        return payment  # cancelled before its order reached payments: it will not be charged
    if payment.status == Payment.Status.PENDING:
        payment.status, payment.failure_reason = Payment.Status.FAILED, "order cancelled before the charge"
        payment.save(update_fields=["status", "failure_reason", "updated_at"])
        return payment
    if payment.status != Payment.Status.CAPTURED:
        return payment
    refund_id = gateway.refund(
        idempotency_key=f"refund-{order_id}", charge_id=payment.gateway_charge_id, amount=payment.amount
    )
    payment.status, payment.gateway_refund_id = Payment.Status.REFUNDED, refund_id
    payment.save(update_fields=["status", "gateway_refund_id", "updated_at"])
    outbox_write(
        PaymentRefunded(
            order_id=order_id, payment_id=str(payment.pk), amount=payment.amount, currency=payment.currency,
            gateway_refund_id=refund_id, correlation_id=order_id, causation_id=causation_id,
        )
    )  # fmt: skip
    return payment
