"""An operator cancels an order or refunds a confirmed one from the admin: permission-checked,
recorded with who and why (``operator.order_*`` events, on the order's timeline), and the
order's states follow what payments and inventory did (refunded, released), whatever order
their events arrive in."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from apps.eventbus.models import OutboxEvent
from apps.orders import services
from apps.orders.errors import InvalidOrder, InvalidTransition, OrderNotFound
from apps.orders.models import Order
from apps.orders.services import Outcome, OutcomeKind

pytestmark = pytest.mark.django_db


def outbox(order: Order) -> list[tuple[str, dict]]:
    """The order's events written so far, (subject, body), in the order written."""
    rows = OutboxEvent.objects.filter(aggregate_id=str(order.pk)).order_by("id")
    return [(row.subject, json.loads(row.body)) for row in rows]


def hear(order: Order, *kinds: OutcomeKind) -> Order:
    """The orders consumer hears these outcomes, in this order, in one batch."""
    subjects = {
        OutcomeKind.PAYMENT_CAPTURED: "payments.completed.v1",
        OutcomeKind.STOCK_RESERVED: "inventory.reserved.v1",
        OutcomeKind.PAYMENT_REFUNDED: "payments.refunded.v1",
        OutcomeKind.STOCK_RELEASED: "inventory.released.v1",
    }
    outcomes = [
        Outcome(str(order.pk), kind, subjects[kind], f"m-{kind}-{n}", payment_id="pay-1")
        for n, kind in enumerate(kinds)
    ]
    with transaction.atomic():
        services.order_outcomes_record(outcomes=outcomes)
    order.refresh_from_db()
    return order


def confirmed(order: Order) -> Order:
    return hear(order, OutcomeKind.PAYMENT_CAPTURED, OutcomeKind.STOCK_RESERVED)


# -- the services -------------------------------------------------------------------------------


@pytest.mark.parametrize("confirm_first", [False, True], ids=["pending", "confirmed"])
def test_an_operator_cancels_an_order_with_compensation_and_an_audited_action(order, operator, confirm_first):
    if confirm_first:
        confirmed(order)
    before = order.status

    services.order_cancel_as_operator(
        order_id=str(order.pk), reason="  customer called:\n wrong address ", actor=operator
    )

    order.refresh_from_db()
    assert order.status == "CANCELLED" and order.cancel_reason == "customer called: wrong address"
    (action_subject, action), (cancel_subject, cancel) = outbox(order)[-2:]
    assert action_subject == "operator.order_cancelled.v1"
    assert action["actor"] == "olivia" and action["actor_id"] == operator.pk
    assert action["correlation_id"] == action["order_id"] == str(order.pk)
    assert action["status_before"] == before and action["reason"] == "customer called: wrong address"
    assert cancel_subject == "orders.cancelled.v1" and cancel["causation_id"] == action["message_id"]


def test_the_stuck_orders_policy_cancels_as_the_platform(order):
    services.order_cancel_as_operator(order_id=str(order.pk), reason="stuck policy: PENDING for 2h", actor=None)
    (_, action), _ = outbox(order)[-2:]
    assert action["actor"] == "" and action["actor_id"] is None


@pytest.mark.parametrize(
    ("reason", "problem"),
    [("", "required"), (" \n\t ", "required"), ("x" * 501, "too long"), ("\x00" * 200, "too long")],
)
def test_an_operator_action_needs_a_bounded_printable_reason(order, operator, reason, problem):
    with pytest.raises(InvalidOrder) as raised:
        services.order_cancel_as_operator(order_id=str(order.pk), reason=reason, actor=operator)
    assert raised.value.fields == {"reason": problem}
    assert Order.objects.get(pk=order.pk).status == "PENDING"


def test_control_characters_in_a_reason_are_escaped_not_stored(order, operator):
    services.order_cancel_as_operator(order_id=str(order.pk), reason="bell\x07 nul\x00 \udcff", actor=operator)
    order.refresh_from_db()
    assert order.cancel_reason == "bell\\x07 nul\\x00 \\udcff"


def test_a_cancelled_order_cannot_be_cancelled_or_refunded_and_nothing_is_written(order, operator):
    services.order_cancel_as_operator(order_id=str(order.pk), reason="first", actor=operator)
    written = OutboxEvent.objects.count()
    with pytest.raises(InvalidTransition):
        services.order_cancel_as_operator(order_id=str(order.pk), reason="again", actor=operator)
    with pytest.raises(InvalidTransition):
        services.order_refund_as_operator(order_id=str(order.pk), reason="again", actor=operator)
    with pytest.raises(OrderNotFound):
        services.order_cancel_as_operator(order_id="not-an-order", reason="x", actor=operator)
    assert OutboxEvent.objects.count() == written


def test_an_operator_refunds_a_confirmed_order_once_and_it_stays_confirmed(order, operator):
    confirmed(order)

    services.order_refund_as_operator(order_id=str(order.pk), reason="damaged in transit", actor=operator)

    order.refresh_from_db()
    assert order.status == "CONFIRMED" and order.refund_requested_at is not None
    assert order.refund_reason == "damaged in transit" and order.payment_state == "captured"
    (action_subject, action), (request_subject, request) = outbox(order)[-2:]
    assert action_subject == "operator.order_refund_requested.v1" and action["actor"] == "olivia"
    assert action["amount"] == "25.00" and action["currency"] == order.currency
    assert request_subject == "orders.refund_requested.v1" and request["causation_id"] == action["message_id"]
    with pytest.raises(InvalidTransition, match="asked for already"):
        services.order_refund_as_operator(order_id=str(order.pk), reason="twice", actor=operator)

    assert hear(order, OutcomeKind.PAYMENT_REFUNDED).payment_state == "refunded"
    assert order.status == "CONFIRMED" and order.stock_state == "reserved"


def test_only_a_confirmed_and_charged_order_is_refunded(order, operator):
    with pytest.raises(InvalidTransition, match="only a CONFIRMED order"):
        services.order_refund_as_operator(order_id=str(order.pk), reason="x", actor=operator)
    Order.objects.filter(pk=order.pk).update(status="CONFIRMED", payment_state="captured", total_amount=0)
    with pytest.raises(InvalidTransition, match="nothing was charged"):
        services.order_refund_as_operator(order_id=str(order.pk), reason="x", actor=operator)


# -- the order hears compensation (the truth about money) ---------------------------------------


def test_a_cancelled_order_shows_its_refund_and_release(order, operator):
    confirmed(order)
    services.order_cancel_as_operator(order_id=str(order.pk), reason="x", actor=operator)
    order = hear(order, OutcomeKind.PAYMENT_REFUNDED, OutcomeKind.STOCK_RELEASED)
    assert (order.status, order.payment_state, order.stock_state) == ("CANCELLED", "refunded", "released")


def test_a_late_capture_or_reservation_never_hides_the_refund_or_release_after_it(order):
    """Each stream is read on its own: the refund can be heard before the capture it undoes."""
    services.order_cancel(order_id=str(order.pk), reason="changed my mind")
    order = hear(order, OutcomeKind.PAYMENT_REFUNDED, OutcomeKind.STOCK_RELEASED)
    order = hear(order, OutcomeKind.PAYMENT_CAPTURED, OutcomeKind.STOCK_RESERVED)
    assert (order.status, order.payment_state, order.stock_state) == ("CANCELLED", "refunded", "released")


# -- the admin ----------------------------------------------------------------------------------


def page(client, order: Order) -> str:
    return client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()


def test_the_order_page_offers_an_operator_cancel_and_refund_and_an_auditor_neither(client, order, operator, auditor):
    client.force_login(auditor)
    assert 'id="order-cancel"' not in page(client, order)
    assert client.get(f"/admin/orders/order/{order.pk}/cancel/").status_code == 403
    assert client.post(f"/admin/orders/order/{order.pk}/cancel/", {"reason": "x"}).status_code == 403
    assert client.post(f"/admin/orders/order/{order.pk}/refund/", {"reason": "x"}).status_code == 403
    assert Order.objects.get(pk=order.pk).status == "PENDING"

    client.force_login(operator)
    html = page(client, order)
    assert 'id="order-cancel"' in html and 'id="order-refund"' not in html, "a PENDING order is not refunded"
    confirmed(order)
    assert 'id="order-refund"' in page(client, order)


def test_an_operator_cancels_from_the_admin_after_a_confirmation_page(client, order, operator):
    client.force_login(operator)
    url = f"/admin/orders/order/{order.pk}/cancel/"
    confirm = client.get(url).content.decode()
    assert "Yes, cancel the order" in confirm and "releases what it reserved" in confirm

    assert client.post(url, {"reason": ""}).status_code == 200, "the form again: a reason is required"
    assert Order.objects.get(pk=order.pk).status == "PENDING"

    response = client.post(url, {"reason": "fraud suspected"}, follow=True)
    assert response.redirect_chain[-1][0] == f"/admin/orders/order/{order.pk}/change/"
    assert "cancelled" in response.content.decode()
    order.refresh_from_db()
    assert order.status == "CANCELLED" and order.cancel_reason == "fraud suspected"
    assert outbox(order)[-2][1]["actor"] == "olivia"

    again = client.post(url, {"reason": "again"}, follow=True).content.decode()
    assert "Nothing was done" in again and "cannot become CANCELLED" in again
    assert "cannot be cancelled now" in client.get(url).content.decode(), "the page says why, no form"


def test_an_operator_refunds_from_the_admin_and_the_page_tells_the_truth_about_money(client, order, operator):
    from apps.payments.models import Payment

    confirmed(order)
    Payment.objects.create(
        order_id=str(order.pk), amount=order.total_amount, currency=order.currency, status="CAPTURED"
    )
    client.force_login(operator)
    assert f"charged 25.00 {order.currency}; kept" in page(client, order)

    response = client.post(f"/admin/orders/order/{order.pk}/refund/", {"reason": "goodwill"}, follow=True)
    assert "refund requested" in response.content.decode()
    assert 'id="order-refund"' not in page(client, order), "one refund"

    Payment.objects.filter(order_id=str(order.pk)).update(status="REFUNDED", gateway_refund_id="re_1")
    hear(order, OutcomeKind.PAYMENT_REFUNDED)
    html = page(client, order)
    assert f"charged 25.00 {order.currency}; refunded 25.00 {order.currency}; kept 0.00 {order.currency}" in html
    assert '<div class="readonly">Refunded</div>' in html and '<div class="readonly">Captured</div>' not in html


def test_an_order_the_saga_confirmed_after_the_operator_read_its_page_is_not_cancelled(client, order, operator):
    """The confirmation page carries the status the operator read; the saga may move on meanwhile."""
    client.force_login(operator)
    url = f"/admin/orders/order/{order.pk}/cancel/"
    assert 'name="expected_status" value="PENDING"' in client.get(url).content.decode()
    confirmed(order)  # the saga decides while the operator types the reason
    written = OutboxEvent.objects.count()

    page = client.post(url, {"reason": "looks stuck", "expected_status": "PENDING"}, follow=True).content.decode()

    assert "Nothing was done" in page and "is CONFIRMED now, no longer PENDING" in page
    assert Order.objects.get(pk=order.pk).status == "CONFIRMED" and OutboxEvent.objects.count() == written


@pytest.mark.parametrize("depth", [900, 100_000], ids=["deep", "deeper-than-the-parser"])
def test_the_order_page_shows_a_hostile_deeply_nested_event_on_its_timeline(client, order, operator, depth):
    from apps.audit.models import AuditEntry
    from apps.audit.selectors import order_timeline

    body = "[" * depth + "]" * depth
    AuditEntry.objects.create(
        subject="orders.confirmed.v1", message_id="m-deep", correlation_id=str(order.pk), stream="ORDERS",
        stream_sequence=1, body=body, previous_hash="0" * 64, hash="1" * 64,
    )  # fmt: skip
    (event,) = order_timeline(str(order.pk))  # what the API's order detail returns too
    assert event["payload"] is None and event["body"].startswith("[[[")
    client.force_login(operator)
    response = client.get(f"/admin/orders/order/{order.pk}/change/")
    assert response.status_code == 200 and "orders.confirmed.v1" in response.content.decode()
