"""apps/orders/services.py: the order state machine (``TRANSITIONS``) and ``_transition``, which
enforces it, on orders held in memory (no database)."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.orders import services
from apps.orders.errors import InvalidTransition
from apps.orders.events import OrderCancelled, OrderConfirmed
from apps.orders.models import Order
from apps.orders.services import TRANSITIONS

Status = Order.Status
STATUSES = list(Status)

# The lifecycle, written out: a saga decides a PENDING order; a customer may still cancel a
# CONFIRMED one (stock is released and the payment refunded); nothing leaves CANCELLED.
ALLOWED = {
    (Status.PENDING, Status.CONFIRMED),
    (Status.PENDING, Status.CANCELLED),
    (Status.CONFIRMED, Status.CANCELLED),
}
ALL_PAIRS = list(itertools.product(STATUSES, repeat=2))
FORBIDDEN = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def test_the_table_is_the_lifecycle():
    assert set(TRANSITIONS) == set(STATUSES)  # every status has a row, even a terminal one
    assert {(source, target) for source, targets in TRANSITIONS.items() for target in targets} == ALLOWED


def test_the_only_terminal_status_is_cancelled():
    assert [status for status in STATUSES if not TRANSITIONS[status]] == [Status.CANCELLED]


def test_no_status_moves_to_itself_or_back_to_pending():
    for source, targets in TRANSITIONS.items():
        assert source not in targets
        assert Status.PENDING not in targets


def test_every_status_ends_in_cancelled():
    for status in STATUSES:
        seen, frontier = {status}, {status}
        while frontier:
            frontier = {target for source in frontier for target in TRANSITIONS[source]} - seen
            seen |= frontier
        assert Status.CANCELLED in seen


# -- _transition enforces the table -------------------------------------------------------------------


@pytest.fixture
def on_commit(monkeypatch) -> list:
    """Callbacks ``_transition`` leaves for the commit (outside a transaction Django would run
    them at once, which needs a database connection)."""
    callbacks: list = []
    monkeypatch.setattr(services.transaction, "on_commit", callbacks.append)
    return callbacks


def order_in(status: str, **fields) -> Order:
    return Order(
        id=uuid.uuid4(),
        customer_id="customer-1",
        status=status,
        total_amount=Decimal("12.50"),
        currency="EUR",
        payment_id="pay-1",
        created_at=timezone.now() - timedelta(seconds=2),
        **fields,
    )


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_an_allowed_transition(on_commit, source, target):
    order = order_in(source)
    decision = services._transition(order, target, reason="because", causation_id="cause-1")
    assert order.status == target
    assert {"status", "updated_at"} <= set(decision.fields)
    expected_event = OrderConfirmed if target == Status.CONFIRMED else OrderCancelled
    assert type(decision.event) is expected_event
    assert decision.event.order_id == str(order.id)
    assert decision.event.correlation_id == str(order.id)
    assert decision.event.causation_id == "cause-1"


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_a_forbidden_transition(on_commit, source, target):
    order = order_in(source)
    with pytest.raises(InvalidTransition, match=f"is {source}; it cannot become {target}") as caught:
        services._transition(order, target, reason="because", causation_id=None)
    assert caught.value.status_code == 409
    assert caught.value.code == "invalid_transition"
    assert order.status == source  # untouched
    assert order.decided_at is None
    assert order.cancel_reason == ""
    assert on_commit == []


@pytest.mark.parametrize("target", STATUSES)
def test_nothing_leaves_cancelled(on_commit, target):
    with pytest.raises(InvalidTransition):
        services._transition(order_in(Status.CANCELLED), target, causation_id=None)


@pytest.mark.parametrize("target", [Status.CONFIRMED, Status.CANCELLED])
def test_leaving_pending_is_the_decision(on_commit, target):
    order = order_in(Status.PENDING)
    decision = services._transition(order, target, causation_id=None)
    assert order.decided_at is not None
    assert order.decided_at >= order.created_at
    assert "decided_at" in decision.fields
    assert len(on_commit) == 1  # the saga's latency, observed once the decision commits


def test_cancelling_a_confirmed_order_keeps_the_first_decision(on_commit):
    decided = timezone.now() - timedelta(seconds=1)
    order = order_in(Status.CONFIRMED, decided_at=decided)
    decision = services._transition(order, Status.CANCELLED, reason="customer asked", causation_id=None)
    assert order.decided_at == decided
    assert "decided_at" not in decision.fields
    assert on_commit == []
    assert decision.fields == ["status", "updated_at", "cancel_reason"]


def test_a_cancellation_carries_its_reason_cut_to_the_column(on_commit):
    order = order_in(Status.PENDING)
    decision = services._transition(order, Status.CANCELLED, reason="r" * 600, causation_id=None)
    assert order.cancel_reason == "r" * 500
    assert decision.event.reason == "r" * 500
    assert decision.event.currency == "EUR"
    assert "cancel_reason" in decision.fields


def test_a_confirmation_carries_the_payment_and_the_total(on_commit):
    order = order_in(Status.PENDING)
    decision = services._transition(order, Status.CONFIRMED, causation_id="payments.completed:1")
    assert (decision.event.payment_id, decision.event.total_amount, decision.event.currency) == (
        "pay-1",
        Decimal("12.50"),
        "EUR",
    )
    assert order.cancel_reason == ""
    assert "cancel_reason" not in decision.fields
