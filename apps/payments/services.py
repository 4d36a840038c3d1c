"""Charging and refunding, exactly once per order, many orders at once.

A provider call takes hundreds of milliseconds, so no transaction or row lock is held
across one. Each operation has three steps:

1. **claim** (a short transaction of its own): the order's Payment row exists, PENDING.
   A PENDING row means "a charge may be in flight": nothing else decides it meanwhile.
2. **call** the provider, many orders concurrently, with an idempotency key derived from
   the order (``charge-<order id>``, ``refund-<order id>``), outside any transaction.
3. **record** the answer inside the consumer's batch transaction, with its event, by a
   conditional update of the still-PENDING (or still-CAPTURED) row.

If the process dies between the call and the record, the redelivered event claims the same
row, calls again with the same key and gets the provider's first answer: one charge. A
cancellation that meets a PENDING payment is retried until the charge is recorded, then
refunds it.

A zero total needs no charge (providers refuse a 0.00 charge): its claim is answered
:data:`NO_CHARGE_NEEDED` without a call and recorded NO_CHARGE, with the same
``payments.completed.v1`` a charge gets; a cancellation then has nothing to refund.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from apps.common import failpoints
from apps.eventbus import tracing
from apps.eventbus.errors import PermanentError, RetryableError
from apps.eventbus.producing.outbox import outbox_write, outbox_write_many

from . import gateway
from .events import PaymentCompleted, PaymentFailed, PaymentRefunded
from .models import Payment

# How long a cancellation waits before looking again at a payment whose charge is in flight.
CHARGE_IN_FLIGHT_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class NoChargeNeeded:
    """The answer to a claimed zero-total payment: the provider is not asked."""


NO_CHARGE_NEEDED = NoChargeNeeded()
# A charge's result, no charge needed, a refund id, or why the call failed.
ProviderAnswer = gateway.ChargeResult | NoChargeNeeded | str | Exception


@dataclass(frozen=True)
class ChargeRequest:
    order_id: str
    amount: Decimal
    currency: str


def payment_charges_request(*, requests: Sequence[ChargeRequest]) -> dict[str, ProviderAnswer]:
    """Claim each order's payment and ask the provider to charge every claimed one, concurrently.

    Call outside a transaction: the claim commits before the provider is called. Returns the
    provider's answer (or the error of the call) for each order whose payment was undecided,
    :data:`NO_CHARGE_NEEDED` (and no call) for a claimed amount of zero; orders already
    charged, failed or cancelled get no call and no entry.
    """
    by_order = {request.order_id: request for request in requests}
    Payment.objects.bulk_create(
        [Payment(order_id=r.order_id, amount=r.amount, currency=r.currency) for r in by_order.values()],
        ignore_conflicts=True,
    )
    claimed = list(
        Payment.objects.filter(order_id__in=by_order, status=Payment.Status.PENDING).values_list(
            "order_id", "amount", "currency"
        )
    )

    def charge(payment: tuple[str, Decimal, str]) -> gateway.ChargeResult:
        order_id, amount, currency = payment  # the claimed row's amount: what this order is charged, always
        with tracing.message_scope(order_id):  # the call continues the trace of this order's event
            return gateway.charge(
                idempotency_key=f"charge-{order_id}", amount=amount, currency=currency, reference=order_id
            )

    # The claimed row's amount decides: a zero total is paid without a call.
    free = [order_id for order_id, amount, _ in claimed if amount == 0]
    billable = [payment for payment in claimed if payment[1] != 0]
    answers: dict[str, ProviderAnswer] = dict.fromkeys(free, NO_CHARGE_NEEDED)
    answers.update(zip([order_id for order_id, _, _ in billable], gateway.each(charge, billable), strict=True))
    refused = [order_id for order_id, answer in answers.items() if isinstance(answer, PermanentError)]
    if refused:  # the provider charged nothing and never will for this request: release the claim
        Payment.objects.filter(order_id__in=refused, status=Payment.Status.PENDING).delete()
    return answers


# One statement for the batch's answers (Django's bulk_update builds a CASE per column and row
# in Python: measured as the payments consumer's largest cost under load).
_RECORD = f"""
    UPDATE {Payment._meta.db_table} AS p
    SET status = c.status, gateway_charge_id = c.charge_id, failure_reason = c.reason, updated_at = c.updated_at
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
        AS c(id, status, charge_id, reason, updated_at)
    WHERE p.id = c.id
"""


@dataclass(frozen=True)
class ChargeAnswer:
    order_id: str
    answer: ProviderAnswer | None  # what payment_charges_request returned for the order (None: no entry)
    causation_id: str


def payment_charges_record(*, answers: Sequence[ChargeAnswer]) -> None:
    """Record the provider's answers to the orders' charges, with their events. Call inside a
    transaction. A fixed number of statements for the whole batch (lock, update, outbox);
    raises the first answer that is an error, for its event to be retried or dead-lettered."""
    locked = Payment.objects.select_for_update().filter(order_id__in={a.order_id for a in answers}).order_by("pk")
    payments = {payment.order_id: payment for payment in locked}
    now = timezone.now()
    changed: dict[str, Payment] = {}
    events = []
    for item in answers:
        payment, answer = payments.get(item.order_id), item.answer
        if payment is not None and (payment.status != Payment.Status.PENDING or item.order_id in changed):
            continue  # decided already (a redelivery, another replica, or cancelled before the charge)
        if isinstance(answer, Exception):
            raise answer
        if payment is None or answer is None:
            raise RetryableError(
                f"the charge of order {item.order_id} was not attempted; it will be on the next delivery"
            )
        failpoints.hit("payments.after_charge", item.order_id)  # fault tests: die between the charge and the commit
        envelope = {"correlation_id": item.order_id, "causation_id": item.causation_id}
        payment.updated_at = now
        free = isinstance(answer, NoChargeNeeded)
        if free or answer.succeeded:
            payment.status = Payment.Status.NO_CHARGE if free else Payment.Status.CAPTURED
            payment.gateway_charge_id = "" if free else answer.charge_id
            events.append(
                PaymentCompleted(
                    order_id=item.order_id, payment_id=str(payment.pk), amount=payment.amount,
                    currency=payment.currency, gateway_charge_id=payment.gateway_charge_id, **envelope,
                )
            )  # fmt: skip
        else:
            payment.status, payment.failure_reason = Payment.Status.FAILED, f"declined: {answer.decline_code}"
            events.append(
                PaymentFailed(
                    order_id=item.order_id, reason=payment.failure_reason, decline_code=answer.decline_code, **envelope
                )
            )
        changed[item.order_id] = payment
    if changed:
        columns = ("pk", "status", "gateway_charge_id", "failure_reason", "updated_at")
        with connection.cursor() as cursor:
            cursor.execute(_RECORD, [[getattr(payment, column) for payment in changed.values()] for column in columns])
    outbox_write_many(events)


def payment_capture(*, order_id: str, amount: Decimal, currency: str, causation_id: str) -> Payment | None:
    """Charge one order: claim, call and record. Call outside a transaction (see the module)."""
    answers = payment_charges_request(requests=[ChargeRequest(order_id, amount, currency)])
    payment_charges_record(answers=[ChargeAnswer(order_id, answers.get(order_id), causation_id)])
    return Payment.objects.filter(order_id=order_id).first()


def payment_refunds_request(*, order_ids: Sequence[str]) -> dict[str, ProviderAnswer]:
    """Ask the provider to refund every captured payment of these (cancelled) orders, concurrently.

    Call outside a transaction. Returns the refund id (or the error of the call) per order whose
    payment was captured; the others get no call and no entry.
    """
    captured = list(
        Payment.objects.filter(order_id__in=set(order_ids), status=Payment.Status.CAPTURED).values_list(
            "order_id", "gateway_charge_id", "amount"
        )
    )

    def refund(payment: tuple[str, str, Decimal]) -> str:
        order_id, charge_id, amount = payment
        with tracing.message_scope(order_id):
            return gateway.refund(idempotency_key=f"refund-{order_id}", charge_id=charge_id, amount=amount)

    return dict(zip([order_id for order_id, _, _ in captured], gateway.each(refund, captured), strict=True))


def payment_refund_for_cancellation(
    *, order_id: str, currency: str, causation_id: str, answer: ProviderAnswer | None = None
) -> Payment | None:
    """Record the refund of a cancelled order's captured payment, once; stop a charge that has not
    happened (its row: amount 0, the order's ``currency``, FAILED "order cancelled"). A NO_CHARGE
    payment has nothing to refund. ``answer`` is what the provider said to
    ``payment_refunds_request``. Call inside a transaction."""
    payment, created = Payment.objects.select_for_update().get_or_create(
        order_id=order_id,
        defaults={
            "amount": 0, "currency": currency, "status": Payment.Status.FAILED, "failure_reason": "order cancelled",
        },
    )  # fmt: skip
    if created:
        return payment  # cancelled before its order reached payments: it will not be charged
    return _record_refund(payment, answer=answer, causation_id=causation_id)


def payment_refund_requested(
    *, order_id: str, causation_id: str, answer: ProviderAnswer | None = None
) -> Payment | None:
    """Record the refund an operator asked for (``orders.refund_requested.v1``) of a CONFIRMED
    order's captured payment, once: a payment refunded already (a redelivery, or the order was
    also cancelled) or never captured (NO_CHARGE) is left as it is. Call inside a transaction."""
    payment = Payment.objects.select_for_update().filter(order_id=order_id).first()
    if payment is None:  # a confirmed order always has its payment; an order of another platform
        raise PermanentError(f"order {order_id} has no payment here: nothing to refund")
    return _record_refund(payment, answer=answer, causation_id=causation_id)


def _record_refund(payment: Payment, *, answer: ProviderAnswer | None, causation_id: str) -> Payment:
    """The provider's answer to ``payment_refunds_request`` for a locked payment: REFUNDED with
    its ``payments.refunded.v1``, once; anything but a CAPTURED payment is left alone."""
    if payment.status == Payment.Status.PENDING:
        raise RetryableError(
            f"the charge of order {payment.order_id} is in flight; its refund waits for the answer",
            delay=CHARGE_IN_FLIGHT_RETRY_SECONDS,
        )
    if payment.status != Payment.Status.CAPTURED:
        return payment
    if isinstance(answer, Exception):
        raise answer
    if answer is None:  # captured since the refund was asked for
        raise RetryableError(f"order {payment.order_id} was charged meanwhile; refunding it next", delay=0.1)
    payment.status, payment.gateway_refund_id = Payment.Status.REFUNDED, answer
    payment.save(update_fields=["status", "gateway_refund_id", "updated_at"])
    outbox_write(
        PaymentRefunded(
            order_id=payment.order_id, payment_id=str(payment.pk), amount=payment.amount, currency=payment.currency,
            gateway_refund_id=answer, correlation_id=payment.order_id, causation_id=causation_id,
        )
    )  # fmt: skip
    return payment
