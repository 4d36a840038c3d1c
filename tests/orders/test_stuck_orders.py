"""Stuck orders: PENDING past ``ORDERS_STUCK_AFTER_SECONDS``, found and explained (which step has
not answered, and whether a dead letter, an unpublished event, a pause or a backlog explains
it), listed in the admin, counted by the metric, and cancelled by policy after a deadline."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.eventbus.jetstream.control import consumer_pause
from apps.eventbus.models import DeadLetter, OutboxEvent
from apps.inventory.services import product_ensure, stock_reserve
from apps.orders import monitoring, tasks
from apps.orders.models import Order
from apps.orders.services import Outcome, OutcomeKind, order_outcomes_record, order_place
from apps.orders.stuck import CauseKind, Step, stuck_orders
from apps.payments.models import Payment
from orders_platform import celery_app
from tests.factories import make_dead_letter
from tests.support import development_check, make_user

pytestmark = pytest.mark.django_db

PAGE = reverse("admin:orders_stuckorder_changelist")
HOUR = timedelta(hours=1)


def place(customer: str = "customer-1", *, age: timedelta = HOUR, published: bool = True) -> Order:
    """An order placed ``age`` ago; ``published``: the relay has sent its orders.created.v1."""
    product_ensure(sku="SKU-STUCK", name="Stuck", price=Decimal("12.50"), stock_on_hand=10_000)
    order = order_place(customer_id=customer, lines=[("SKU-STUCK", 2)])
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - age)  # placed earlier
    if published:
        relay_sent(order)
    order.refresh_from_db()
    return order


def relay_sent(order: Order) -> None:
    """What the relay does once it has published the order's events."""
    OutboxEvent.objects.filter(aggregate_id=str(order.pk)).update(sent_at=timezone.now(), stream_sequence=1)


def pay(order: Order, status: str) -> Payment:
    """The payments app's row for the order (as its claim and record leave it)."""
    return Payment.objects.create(order_id=str(order.pk), amount=order.total_amount, currency="EUR", status=status)


def hear(order: Order, *kinds: OutcomeKind) -> None:
    """The orders consumer hears these outcomes."""
    subjects = {
        OutcomeKind.PAYMENT_CAPTURED: "payments.completed.v1",
        OutcomeKind.STOCK_RESERVED: "inventory.reserved.v1",
    }
    with transaction.atomic():
        order_outcomes_record(
            outcomes=[Outcome(str(order.pk), kind, subjects[kind], f"m-{kind}", payment_id="1") for kind in kinds]
        )


def only(stuck_list):
    [stuck] = stuck_list
    return stuck


def wait_on(stuck, step: Step):
    [wait] = [wait for wait in stuck.waits if wait.step == step]
    return wait


def kinds(wait) -> list[CauseKind]:
    return [cause.kind for cause in wait.causes]


@pytest.fixture
def nats_down(settings):
    """NATS configured at a port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.NATS = {**settings.NATS, "SERVERS": [f"nats://127.0.0.1:{port}"]}
    settings.READINESS_TIMEOUT = 0.5
    return port


# -- the selector: what each step's records say -----------------------------------------------


def test_only_pending_orders_past_the_bound_are_stuck_oldest_first(settings, nats_down):
    settings.ORDERS_STUCK_AFTER_SECONDS = 300
    older, old = place("older", age=2 * HOUR), place("old", age=HOUR)
    place("recent", age=timedelta(seconds=60))
    hear(place("decided"), OutcomeKind.PAYMENT_CAPTURED, OutcomeKind.STOCK_RESERVED)

    found = stuck_orders()

    assert [stuck.order.pk for stuck in found] == [older.pk, old.pk]
    assert [stuck.order.pk for stuck in stuck_orders(after=found[0])] == [old.pk], "the next page"
    assert [stuck.order.pk for stuck in stuck_orders(older_than=90 * timedelta(minutes=1))] == [older.pk]
    assert timedelta(minutes=119) < found[0].age < timedelta(minutes=121)


def test_an_order_no_step_has_answered_waits_on_payments_and_inventory(nats_down):
    place()

    stuck = only(stuck_orders())

    assert stuck.waiting_on == (Step.PAYMENTS, Step.INVENTORY)
    payments, inventory = stuck.waits
    assert (payments.state, payments.consumer, payments.charge_in_flight) == ("no payment yet", "payments", False)
    assert (inventory.state, inventory.consumer) == ("no stock decision yet", "inventory")
    # NATS does not answer: the consumers' part is unknown, and says so.
    assert kinds(payments) == [CauseKind.NATS_UNREACHABLE]
    assert "NATS unreachable, so the state of payments is unknown" in payments.causes[0].text
    assert payments.causes[0].url == reverse("admin:operations_consumer_changelist") + "#consumer-payments"


def test_an_orders_created_event_the_relay_has_not_published_explains_both_steps(nats_down):
    order = place(published=False)

    stuck = only(stuck_orders())

    for wait in stuck.waits:
        assert kinds(wait)[0] == CauseKind.NOT_PUBLISHED
        assert wait.causes[0].text == "the relay has not published orders.created.v1"
        assert wait.causes[0].url.endswith(f"?q={order.pk}")


def test_a_pending_payment_is_a_charge_in_flight(nats_down):
    order = place()
    payment = pay(order, Payment.Status.PENDING)

    stuck = only(stuck_orders())

    wait = wait_on(stuck, Step.PAYMENTS)
    assert wait.charge_in_flight and stuck.charge_in_flight
    assert wait.state.startswith(f"a charge may be in flight (payment #{payment.pk} PENDING since ")
    assert wait.consumer == "payments"


def test_a_captured_payment_the_orders_consumer_has_not_heard_waits_on_the_orders_consumer(nats_down):
    order = place()
    payment = pay(order, Payment.Status.CAPTURED)

    wait = wait_on(only(stuck_orders()), Step.PAYMENTS)

    assert wait.state == f"payment #{payment.pk} is CAPTURED; the orders consumer has not heard"
    assert wait.consumer == "orders" and not wait.charge_in_flight
    assert "NATS unreachable, so the state of orders is unknown" in wait.causes[0].text


def test_a_stock_decision_not_yet_published_is_the_reason_inventory_is_not_heard(nats_down):
    order = place()
    stock_reserve(order_id=str(order.pk), lines=[("SKU-STUCK", 2)])  # writes inventory.reserved.v1, unsent

    wait = wait_on(only(stuck_orders()), Step.INVENTORY)

    assert wait.state == "inventory decided reserved; the orders consumer has not heard"
    assert wait.consumer == "orders"
    assert wait.causes[0].kind == CauseKind.NOT_PUBLISHED
    assert wait.causes[0].text == "the relay has not published inventory.reserved.v1"


def test_both_steps_heard_but_undecided_waits_on_the_orders_consumer(nats_down):
    order = place()
    Order.objects.filter(pk=order.pk).update(payment_state="captured", stock_state="reserved")  # no decision: a bug

    stuck = only(stuck_orders())

    assert stuck.waiting_on == (Step.ORDERS,)
    assert stuck.waits[0].state == "payment captured and stock reserved heard, but no decision"


def test_an_open_dead_letter_of_the_step_for_the_order_is_the_reason_and_the_link(nats_down):
    order = place()
    other = place("other")
    letter = make_dead_letter(
        consumer="payments", correlation_id=str(order.pk), stream="ORDERS", subject="orders.created.v1",
        error_type="PermanentError", error="card\nrefused\x00 by the gateway",
    )  # fmt: skip
    resolved = make_dead_letter(consumer="inventory", correlation_id=str(order.pk), stream="ORDERS")
    DeadLetter.objects.filter(pk=resolved.pk).update(status=DeadLetter.Status.RESOLVED)
    make_dead_letter(consumer="testing", correlation_id=str(other.pk))  # another consumer's: not the saga's

    stuck, other_stuck = stuck_orders()

    payments = wait_on(stuck, Step.PAYMENTS)
    first = payments.causes[0]
    assert first.kind == CauseKind.DEAD_LETTER
    assert (
        first.text
        == f"dead letter #{letter.pk} of payments (pending): PermanentError: card refused\\x00 by the gateway"
    )
    assert first.url == reverse("admin:eventbus_deadletter_change", args=[letter.pk])
    assert stuck.first_link == first and first.label == f"dead letter #{letter.pk}"
    # The step gave up on the order: saga-failures should have cancelled it; NATS cannot say why not.
    assert kinds(payments)[1:] == [CauseKind.NATS_UNREACHABLE]
    assert "saga-failures" in payments.causes[1].text
    assert CauseKind.DEAD_LETTER not in kinds(wait_on(stuck, Step.INVENTORY)), "a resolved dead letter is closed"
    assert CauseKind.DEAD_LETTER not in [cause.kind for cause in other_stuck.causes]


def test_a_page_of_stuck_orders_costs_a_fixed_number_of_queries(nats_down, django_assert_max_num_queries):
    first = place("first")
    pay(first, Payment.Status.PENDING)
    make_dead_letter(consumer="payments", correlation_id=str(first.pk), stream="ORDERS")
    with django_assert_max_num_queries(6) as one:
        assert len(stuck_orders()) == 1
    for number in range(99):
        order = place(f"c-{number}", published=number % 2 == 0)
        pay(order, Payment.Status.CAPTURED if number % 3 else Payment.Status.PENDING)
        stock_reserve(order_id=str(order.pk), lines=[("SKU-STUCK", 1)])
        make_dead_letter(
            consumer="orders", correlation_id=str(order.pk), stream="PAYMENTS", subject="payments.completed.v1"
        )

    with django_assert_max_num_queries(len(one.captured_queries)):
        found = stuck_orders()
        explained = [stuck.explanation() for stuck in found]

    assert len(found) == 100 and all(explained)
    sql = one.captured_queries[0]["sql"]
    assert "\"status\" = 'PENDING'" in sql and "ORDER BY" in sql and "LIMIT 100" in sql


def test_the_orders_query_uses_the_partial_index_of_pending_orders(nats_down):
    from django.db import connection

    from apps.orders.stuck import pending_before

    place()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask what the planner can use
        plan = pending_before(timezone.now())[:100].explain()
    assert "orders_pending_created" in plan, plan


# -- the live state of consumers, from a real nats-server ---------------------------------------


def test_a_paused_consumer_and_a_backlog_explain_the_wait(declared, operator):
    order = place()
    declared.publish("orders.created.v1", {"order_id": str(order.pk)})  # waits for payments and inventory
    consumer_pause(name="payments", actor=operator)
    heard_nothing = place("decided-not-heard")
    with transaction.atomic():  # as the inventory consumer's batch
        stock_reserve(order_id=str(heard_nothing.pk), lines=[("SKU-STUCK", 1)])
    relay_sent(heard_nothing)

    found = {stuck.order.pk: stuck for stuck in stuck_orders()}

    payments = wait_on(found[order.pk], Step.PAYMENTS)
    assert kinds(payments) == [CauseKind.PAUSED, CauseKind.BACKLOG]
    assert payments.causes[0].text.startswith("payments is paused until ")
    assert payments.causes[1].text == "payments has a backlog: 1 not delivered, 0 unacknowledged"
    inventory = wait_on(found[order.pk], Step.INVENTORY)
    assert kinds(inventory) == [CauseKind.BACKLOG, CauseKind.NOT_FETCHING]
    assert inventory.causes[1].text == "no runner of inventory is fetching (never delivered)"
    # inventory.reserved.v1 was published and the orders consumer has nothing pending: nothing explains it.
    unexplained = wait_on(found[heard_nothing.pk], Step.INVENTORY)
    assert kinds(unexplained) == [CauseKind.UNKNOWN]
    assert "no dead letter, pause or backlog of orders explains it" in unexplained.causes[0].text


# -- the admin page -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_operators_and_auditors_see_the_stuck_orders_with_links(client, request, role, nats_down):
    order = place()
    letter = make_dead_letter(consumer="inventory", correlation_id=str(order.pk), stream="ORDERS")
    pay(order, Payment.Status.PENDING)
    client.force_login(request.getfixturevalue(role))

    assert PAGE in client.get(reverse("admin:index")).content.decode(), "listed in the admin index"
    response = client.get(PAGE)

    page = response.content.decode()
    assert response.status_code == 200
    assert reverse("admin:orders_order_change", args=[order.pk]) in page
    assert f'href="{reverse("admin:eventbus_deadletter_change", args=[letter.pk])}"' in page
    assert f'class="stuck-link" href="{reverse("admin:eventbus_deadletter_change", args=[letter.pk])}"' in page
    assert "a charge may be in flight" in page and "1 h 00 min" in page and "25.00 EUR" in page
    assert 'id="stuck-nats-error"' in page and "NATS unreachable" in page, "the page renders without NATS"
    assert "Add stuck order" not in page


def test_the_page_needs_the_permission_to_view_orders(client, db):
    client.force_login(make_user("visitor", is_staff=True))
    assert client.get(PAGE).status_code == 403
    assert PAGE not in client.get(reverse("admin:index")).content.decode()


def test_the_page_costs_the_same_queries_for_one_or_many_orders(
    client, operator, nats_down, django_assert_max_num_queries
):
    place()
    client.force_login(operator)
    with django_assert_max_num_queries(30) as one:
        client.get(PAGE)
    for number in range(20):
        place(f"c-{number}")
    with django_assert_max_num_queries(len(one.captured_queries) + 1):  # + the count of a full page
        assert client.get(PAGE).status_code == 200


# -- the metric ---------------------------------------------------------------------------------


def test_the_gauges_count_stuck_orders_by_the_step_they_wait_on(settings):
    settings.ORDERS_STUCK_AFTER_SECONDS = 300
    place("both")
    hear(place("paid"), OutcomeKind.PAYMENT_CAPTURED)
    hear(place("reserved"), OutcomeKind.STOCK_RESERVED)
    place("too recent", age=timedelta(seconds=10))

    monitoring.refresh_gauges()

    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("orders_stuck") == 3
    values = {step: REGISTRY.get_sample_value("orders_stuck_waiting", {"waiting_on": step}) for step in Step}
    assert values == {"payments": 2, "inventory": 2, "orders": 0}


def test_the_gauges_cost_one_query(django_assert_num_queries):
    place()
    with django_assert_num_queries(1):
        monitoring.refresh_gauges()


# -- the policy -----------------------------------------------------------------------------------


def cancel_after(hours: float) -> dict:
    return tasks.stuck_policy_apply(policy="cancel", cancel_after=timedelta(hours=hours))


def outbox_of(order: Order) -> dict[str, dict]:
    rows = OutboxEvent.objects.filter(aggregate_id=str(order.pk), sent_at__isnull=True)
    return {row.subject: {**json.loads(row.body), "headers": row.headers} for row in rows}


def test_the_report_policy_counts_and_changes_nothing(nats_down, caplog):
    place("overdue", age=3 * HOUR)
    place("stuck", age=HOUR)

    figures = tasks.stuck_policy_apply(policy="report", cancel_after=2 * HOUR)

    assert figures == {
        "policy": "report", "stuck": 2, "overdue": 1, "cancelled": 0, "skipped_charge_in_flight": 0,
        "skipped_decided": 0, "failed": 0,
    }  # fmt: skip
    assert set(Order.objects.values_list("status", flat=True)) == {"PENDING"}
    assert "2 stuck, 1 PENDING longer than 7200 s; cancelled 0" in caplog.text


def test_the_cancel_policy_cancels_overdue_orders_with_compensation_and_an_audited_reason(nats_down):
    overdue = place("overdue", age=3 * HOUR)
    letter = make_dead_letter(consumer="payments", correlation_id=str(overdue.pk), stream="ORDERS")
    within = place("within the deadline", age=HOUR)

    figures = cancel_after(2)

    assert (figures["cancelled"], figures["overdue"], figures["stuck"]) == (1, 1, 2)
    overdue.refresh_from_db()
    assert overdue.status == Order.Status.CANCELLED
    assert Order.objects.get(pk=within.pk).status == Order.Status.PENDING, "the deadline is respected"
    assert overdue.cancel_reason.startswith("stuck policy: PENDING for 3 h 00 min; waiting on payments, inventory: ")
    assert f"dead letter #{letter.pk} of payments" in overdue.cancel_reason and len(overdue.cancel_reason) <= 500
    events = outbox_of(overdue)
    assert events["orders.cancelled.v1"]["correlation_id"] == str(overdue.pk)
    action = events["operator.order_cancelled.v1"]
    assert action["correlation_id"] == str(overdue.pk) and action["actor"] == "" and action["actor_id"] is None
    assert action["reason"] == overdue.cancel_reason and action["status_before"] == "PENDING"
    assert events["orders.cancelled.v1"]["causation_id"] == action["message_id"]
    assert cancel_after(2)["cancelled"] == 0, "once"


def test_the_cancel_policy_skips_an_order_whose_charge_may_be_in_flight(nats_down):
    order = place(age=3 * HOUR)
    pay(order, Payment.Status.PENDING)

    figures = cancel_after(2)

    assert (figures["cancelled"], figures["skipped_charge_in_flight"]) == (0, 1)
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING


def test_an_order_decided_meanwhile_is_skipped_not_cancelled(nats_down):
    order = place(age=3 * HOUR)
    stuck = only(stuck_orders(older_than=2 * HOUR))
    hear(order, OutcomeKind.PAYMENT_CAPTURED, OutcomeKind.STOCK_RESERVED)  # the saga decides first

    assert tasks._cancel(stuck) == "skipped_decided"
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    assert not OutboxEvent.objects.filter(subject="operator.order_cancelled.v1").exists()


def test_a_run_cancels_a_bounded_number_of_orders(nats_down, monkeypatch):
    monkeypatch.setattr(tasks, "MAX_CANCELLED", 2)
    monkeypatch.setattr(tasks, "PAGE", 2)
    in_flight = place("in flight", age=5 * HOUR)
    pay(in_flight, Payment.Status.PENDING)
    orders = [place(f"c-{n}", age=(4 - n / 10) * HOUR) for n in range(3)]

    figures = cancel_after(2)

    assert (figures["cancelled"], figures["skipped_charge_in_flight"]) == (2, 1), "past the skipped one, on a page"
    statuses = [Order.objects.get(pk=order.pk).status for order in orders]
    assert statuses == ["CANCELLED", "CANCELLED", "PENDING"], "oldest first; the rest on the next run"


def test_a_long_explanation_is_cut_to_the_reason_bound(nats_down):
    order = place(age=3 * HOUR)
    for number in range(8):
        make_dead_letter(
            consumer="payments", correlation_id=str(order.pk), stream="ORDERS", error="x" * 300 + str(number)
        )

    reason = tasks.reason(only(stuck_orders()))

    assert len(reason) == 500 and reason.endswith("…")


# -- the job: Celery beat, a real worker, the settings --------------------------------------------


def test_beat_runs_the_policy_every_minute():
    entry = celery_app.conf.beat_schedule["apply-stuck-orders-policy"]
    assert entry == {"task": tasks.apply_stuck_policy.name, "schedule": 60}
    assert tasks.apply_stuck_policy.name == "orders.apply_stuck_policy"


@pytest.mark.slow
def test_a_real_worker_applies_the_cancel_policy(transactional_db):
    from tests.support import start_celery_worker, stop_celery_worker

    overdue = place(age=3 * HOUR)
    worker = start_celery_worker(ORDERS_STUCK_POLICY="cancel", ORDERS_STUCK_CANCEL_AFTER_SECONDS="7200")
    try:
        figures = tasks.apply_stuck_policy.delay().get(timeout=30)
    finally:
        stop_celery_worker(worker)

    assert (figures["policy"], figures["cancelled"]) == ("cancel", 1)
    assert Order.objects.get(pk=overdue.pk).status == Order.Status.CANCELLED
    assert OutboxEvent.objects.filter(subject="operator.order_cancelled.v1", aggregate_id=str(overdue.pk)).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ORDERS_STUCK_POLICY": "delete"}, "ORDERS_STUCK_POLICY must be one of report, cancel; got 'delete'"),
        (
            {"ORDERS_STUCK_AFTER_SECONDS": "600", "ORDERS_STUCK_CANCEL_AFTER_SECONDS": "300"},
            "ORDERS_STUCK_CANCEL_AFTER_SECONDS must be at least 600; got 300",
        ),
    ],
)
def test_a_bad_policy_setting_stops_the_start_up(tmp_path, overrides, message):
    result = development_check(tmp_path, **overrides)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
