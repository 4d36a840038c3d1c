"""A saga step that gives up on an order (dead-letters its orders.created.v1) ends it:
CANCELLED with the step's error as the reason, its stock released and nothing charged, once.
The ``saga-failures`` consumer reads the dead letters of inventory and payments."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.eventbus import headers as h
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.deadletters.services import dead_letter_reprocess
from apps.eventbus.models import DeadLetter, OutboxEvent, ProcessedMessage
from apps.inventory.models import Product, Reservation, StockDecision
from apps.inventory.services import product_ensure
from apps.orders import handlers, services
from apps.orders.models import Order
from apps.orders.services import SagaStep
from apps.payments.models import Payment
from orders_platform.processes import platform_programs
from tests.bus import final, wait_for
from tests.gateway import Gateway, charges


@pytest.fixture
def catalogue(db):
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=100)


def dead_letter_headers(step: str, *, subject: str = "orders.created.v1", sequence: int = 1, **extra) -> dict:
    """The headers the runner puts on a dead letter (apps/eventbus/deadletters/codec.py)."""
    return {
        "Nats-Msg-Id": f"dlq:{step}:ORDERS:{sequence}",
        h.DL_CONSUMER: step,
        h.DL_STREAM: "ORDERS",
        h.DL_SUBJECT: subject,
        h.DL_SEQUENCE: str(sequence),
        h.DL_ATTEMPTS: "1",
        h.DL_ERROR_TYPE: "PermanentError",
        h.DL_ERROR: "payment gateway refused the charge (422)",
        **extra,
    }


def delivery(step: str, body: bytes | dict, *, on: str | None = None, **header_options) -> Delivery:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return Delivery(
        stream="DLQ",
        delivery_subject=on or f"dlq.{step}",
        data=data,
        headers=dead_letter_headers(step, **header_options),
        stream_sequence=1,
        num_delivered=1,
    )


def cancellations(order: Order) -> list[dict]:
    rows = OutboxEvent.objects.filter(subject="orders.cancelled.v1", aggregate_id=str(order.pk)).order_by("id")
    return [json.loads(row.body) for row in rows]


def status(order: Order) -> str:
    order.refresh_from_db()
    return order.status


# -- reading a dead letter -------------------------------------------------------------------


def test_a_dead_letter_of_an_orders_placement_names_the_step_and_its_error():
    outcome = handlers.step_failure_of(delivery("payments", {"order_id": "o-1", "total_amount": "1.00"}))
    assert outcome.order_id == "o-1" and outcome.step == SagaStep.PAYMENT and outcome.kind == "step_failed"
    assert outcome.reason == (
        "payments gave up on the order (dead letter): PermanentError: payment gateway refused the charge (422)"
    )
    assert outcome.causation_id == "dlq:payments:ORDERS:1", "the dead letter's own id"


def test_the_reason_is_one_printable_line_of_at_most_500_characters():
    error = "line one\nline\x00two\t" + "x" * 5000
    outcome = handlers.step_failure_of(delivery("inventory", {"order_id": "o-1"}, **{h.DL_ERROR: error}))
    assert len(outcome.reason) == 500 and outcome.reason.endswith("…")
    assert outcome.reason.startswith(
        "inventory gave up on the order (dead letter): PermanentError: line one line two x"
    )
    assert outcome.reason.isprintable()


@pytest.mark.parametrize(
    ("case", "dead_letter"),
    [
        ("not JSON", delivery("payments", b"\x00\xff")),
        ("deeply nested JSON", delivery("payments", b"[" * 100_000 + b"]" * 100_000)),
        ("not an object", delivery("payments", b'["o-1"]')),
        ("no order id", delivery("payments", {"note": "x"})),
        ("an order id that is no text", delivery("payments", {"order_id": {"id": 1}})),
        ("an order id too long to be one", delivery("payments", {"order_id": "o" * 101})),
        ("a failed compensation", delivery("payments", {"order_id": "o-1"}, subject="orders.cancelled.v1")),
        ("not a saga step", delivery("audit", {"order_id": "o-1"})),
        ("headers of another step", delivery("inventory", {"order_id": "o-1"}, on="dlq.payments")),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_dead_letters_that_name_no_order_placement_are_ignored(case, dead_letter):
    assert handlers.step_failure_of(dead_letter) is None, case


def test_a_redelivered_dead_letter_is_read_by_its_original_subject():
    redelivered = delivery("payments", {"order_id": "o-1"}, on="redeliver.DLQ.saga-failures")
    redelivered.headers["Eventbus-Original-Subject"] = "dlq.payments"
    assert handlers.step_failure_of(redelivered).step == SagaStep.PAYMENT


# -- the saga's decision ----------------------------------------------------------------------


def fail(order: Order, step: SagaStep, message_id: str = "dlq:x:ORDERS:1") -> Order | None:
    return services.order_step_failed(
        order_id=str(order.pk), step=step, reason=f"{step} gave up", subject=f"dlq.{step}", causation_id=message_id
    )


def test_a_pending_order_whose_step_failed_is_cancelled_once_with_the_reason(catalogue):
    order = services.order_place(customer_id="c", lines=[("KB", 1)])
    fail(order, SagaStep.PAYMENT, "dlq:payments:ORDERS:1")
    fail(order, SagaStep.STOCK, "dlq:inventory:ORDERS:1")  # the other step gave up on it too

    assert status(order) == "CANCELLED" and order.cancel_reason == "payments gave up" and order.decided_at
    (cancelled,) = cancellations(order)
    assert cancelled["reason"] == "payments gave up" and cancelled["currency"] == "EUR"
    assert cancelled["causation_id"] == "dlq:payments:ORDERS:1"


def test_a_decided_order_is_left_alone(catalogue):
    order = services.order_place(customer_id="c", lines=[("KB", 1)])
    services.order_payment_captured(order_id=str(order.pk), payment_id="p-1", subject="s", causation_id="m-1")
    services.order_stock_reserved(order_id=str(order.pk), subject="s", causation_id="m-2")
    assert status(order) == "CONFIRMED"

    fail(order, SagaStep.STOCK)
    assert status(order) == "CONFIRMED" and cancellations(order) == []


def test_a_late_dead_letter_of_a_step_the_order_heard_succeed_is_ignored(catalogue):
    """Paid but not yet reserved: a payments dead letter is stale (e.g. the server's
    MAX_DELIVERIES report of a message that was handled); an inventory one still ends it."""
    order = services.order_place(customer_id="c", lines=[("KB", 1)])
    services.order_payment_captured(order_id=str(order.pk), payment_id="p-1", subject="s", causation_id="m-1")

    fail(order, SagaStep.PAYMENT)
    assert status(order) == "PENDING" and cancellations(order) == []
    fail(order, SagaStep.STOCK)
    assert status(order) == "CANCELLED" and len(cancellations(order)) == 1


def test_the_consumer_is_declared_on_the_dead_letters_of_the_saga_steps_and_run_by_make_run(bus):
    out = io.StringIO()
    call_command("nats_setup", stdout=out)
    assert "consumer DLQ/saga-failures: created" in out.getvalue().splitlines()
    config = bus.consumer_info("DLQ", "saga-failures").config
    assert sorted(config.filter_subjects) == ["dlq.inventory", "dlq.payments"]

    programs = {program.name: program.argv for program in platform_programs(host="127.0.0.1", port=8000)}
    assert programs["saga-failures"][-2:] == ["runconsumer", "saga-failures"]


# -- through real processes -------------------------------------------------------------------


@pytest.mark.slow
def test_dead_letters_that_are_not_about_a_pending_order_change_nothing(bus, catalogue):
    pending = services.order_place(customer_id="c", lines=[("KB", 1)])
    confirmed = services.order_place(customer_id="c", lines=[("KB", 1)])
    services.order_payment_captured(order_id=str(confirmed.pk), payment_id="p-1", subject="s", causation_id="m-1")
    services.order_stock_reserved(order_id=str(confirmed.pk), subject="s", causation_id="m-2")
    noise = [
        (b"\x00", dead_letter_headers("payments", sequence=1)),
        (b'{"note": "x"}', dead_letter_headers("payments", sequence=2)),
        (json.dumps({"order_id": str(confirmed.pk)}).encode(), dead_letter_headers("payments", sequence=3)),
        (
            json.dumps({"order_id": str(pending.pk)}).encode(),
            dead_letter_headers("payments", sequence=4, **{h.DL_SUBJECT: "orders.cancelled.v1"}),
        ),
        (json.dumps({"order_id": str(pending.pk)}).encode(), {}),  # not published by the eventbus
        (json.dumps({"order_id": "not-an-order"}).encode(), dead_letter_headers("inventory", sequence=5)),
    ]
    with bus.consumer("saga-failures"):
        for number, (body, headers) in enumerate(noise):
            subject = "dlq.inventory" if number == len(noise) - 1 else "dlq.payments"
            bus.publish(subject, body, headers=headers or {"Nats-Msg-Id": f"other-{number}"})
        wait_for(lambda: ProcessedMessage.objects.filter(consumer="saga-failures").count() == len(noise))

        assert (status(pending), status(confirmed)) == ("PENDING", "CONFIRMED")
        assert not OutboxEvent.objects.filter(subject="orders.cancelled.v1").exists()

        # Then a real dead letter of the pending order's placement, twice (two steps gave up).
        body = json.dumps({"order_id": str(pending.pk)}).encode()
        bus.publish("dlq.payments", body, headers=dead_letter_headers("payments", sequence=9))
        bus.publish("dlq.inventory", body, headers=dead_letter_headers("inventory", sequence=9))
        wait_for(lambda: ProcessedMessage.objects.filter(consumer="saga-failures").count() == len(noise) + 2)
    assert status(pending) == "CANCELLED" and len(cancellations(pending)) == 1
    assert bus.stream_messages("DLQ") == len(noise) + 2, "the consumer dead-lettered nothing itself"


@pytest.fixture
def saga(bus, settings, tmp_path, catalogue):
    """Every process of the saga, the dead-letter recorder and saga-failures, on the gateway simulator."""
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    settings.PAYMENT_GATEWAY_URL = gateway.url
    with bus.running("inventory", "payments", "orders", "saga-failures", "dead-letters"):
        yield gateway
    gateway.stop()


def released_once(order: Order) -> bool:
    """Inventory reserved the order's stock, then gave it back, once."""
    decision = StockDecision.objects.filter(order_id=str(order.pk)).first()
    return (
        decision is not None
        and decision.outcome == StockDecision.Outcome.RELEASED
        and OutboxEvent.objects.filter(subject="inventory.released.v1", aggregate_id=str(order.pk)).count() == 1
    )


@pytest.mark.slow
def test_a_charge_the_provider_refuses_ends_the_order_and_reprocessing_it_charges_nothing(saga, bus):
    """The provider refuses the charge (422: its idempotency key was used for another request):
    payments dead-letters orders.created.v1 at once. The order is cancelled with that error,
    its reserved stock released once, nothing charged or refunded; when an operator later
    reprocesses the dead letter, payments acknowledges it without calling the provider."""
    gateway = saga
    with transaction.atomic():  # the event leaves with the commit, after the key is taken
        order = services.order_place(customer_id="c", lines=[("KB", 2)])
        taken = gateway.call(
            "POST", "/v1/charges", {"amount": "1.00", "currency": "EUR", "reference": "elsewhere"}, f"charge-{order.pk}"
        )
        assert taken[0] == 201

    assert final(order) == "CANCELLED"
    assert order.cancel_reason.startswith(
        "payments gave up on the order (dead letter): PermanentError: payment gateway refused the charge (422)"
    )
    assert "idempotency_key_reused" in order.cancel_reason
    wait_for(lambda: released_once(order), timeout=30)
    assert Product.objects.get(sku="KB").stock_on_hand == 100
    assert Reservation.objects.get(order_id=str(order.pk)).released_at is not None
    wait_for(lambda: Payment.objects.filter(order_id=str(order.pk)).exists(), timeout=30)
    payment = Payment.objects.get(order_id=str(order.pk))
    assert (payment.status, payment.amount, payment.currency) == ("FAILED", Decimal("0.00"), "EUR")
    assert charges(gateway, order.pk) == [], "never charged"
    assert not OutboxEvent.objects.filter(subject="payments.refunded.v1").exists()
    assert len(cancellations(order)) == 1

    # The operator reprocesses the payments dead letter: acknowledged, no call, still not charged.
    wait_for(lambda: DeadLetter.objects.filter(consumer="payments").exists(), timeout=30)
    dead_letter = DeadLetter.objects.get(consumer="payments")
    assert dead_letter.subject == "orders.created.v1" and dead_letter.correlation_id == str(order.pk)
    requests_before = gateway.call("GET", "/_stats")[1]["requests"]
    dead_letter_reprocess(dead_letter=dead_letter, actor=None)
    wait_for(lambda: DeadLetter.objects.get(pk=dead_letter.pk).status == DeadLetter.Status.RESOLVED, timeout=30)
    assert gateway.call("GET", "/_stats")[1]["requests"] == requests_before, "the provider was not asked again"
    assert charges(gateway, order.pk) == []
    assert Payment.objects.get(order_id=str(order.pk)).status == "FAILED"
    assert status(order) == "CANCELLED" and len(cancellations(order)) == 1


@pytest.mark.slow
def test_an_order_whose_event_both_steps_dead_letter_is_cancelled_once_and_never_reserved_or_charged(saga, bus):
    """A producer bug: the order's orders.created.v1 fails its contract, so inventory and
    payments both dead-letter it at once. One cancellation; inventory remembers it (the order
    is never reserved), payments stops its charge."""
    gateway = saga
    with transaction.atomic():
        order = services.order_place(customer_id="c", lines=[("KB", 1)])
        row = OutboxEvent.objects.get(subject="orders.created.v1", aggregate_id=str(order.pk))
        row.body = json.dumps({**json.loads(row.body), "total_amount": "not money"})
        row.save(update_fields=["body"])

    assert final(order) == "CANCELLED"
    assert "gave up on the order (dead letter): ContractError: orders.created.v1 failed validation" in (
        order.cancel_reason
    )
    wait_for(lambda: ProcessedMessage.objects.filter(consumer="saga-failures").count() == 2, timeout=30)
    assert len(cancellations(order)) == 1, "two dead letters, one decision"
    wait_for(lambda: Payment.objects.filter(order_id=str(order.pk)).exists(), timeout=30)
    wait_for(lambda: StockDecision.objects.filter(order_id=str(order.pk)).exists(), timeout=30)
    assert StockDecision.objects.get(order_id=str(order.pk)).outcome == StockDecision.Outcome.CANCELLED_FIRST
    assert Product.objects.get(sku="KB").stock_on_hand == 100
    payment = Payment.objects.get(order_id=str(order.pk))
    assert (payment.status, payment.currency) == ("FAILED", "EUR")
    assert charges(gateway, order.pk) == [] and gateway.call("GET", "/_stats")[1]["requests"] == 0
