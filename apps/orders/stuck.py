"""Stuck orders: PENDING longer than ``ORDERS_STUCK_AFTER_SECONDS``, each with why.

The saga decides an order when the ``orders`` consumer has heard both steps: ``payments``
(a Payment row per order; PENDING means a charge may be in flight) and ``inventory`` (a
StockDecision per order). For each step the order has not heard, :func:`stuck_orders` says
where the step is (nothing yet, a charge in flight, decided but not heard) and what explains
it, most specific first:

- an open dead letter of the consumer that must act, for this order (the ``saga-failures``
  consumer should then have cancelled the order: its own state is added when it explains why
  not);
- an event of the order the relay has not published yet, or set aside (JetStream refused it);
- only when neither explains it (the message is in the consumer's stream): the consumer
  paused, its durable missing, a backlog (and no runner fetching), or NATS unreachable (the
  consumer's state is unknown); else "unknown".

A fixed number of queries for a page of any size (the orders through the partial index
``orders_pending_created``, payments, stock decisions, dead letters, unpublished and set-aside
events) and one look at NATS per call, none when nothing is stuck. Dead letters and outbox rows
are the eventbus's tables, read here by correlation id (the order's id) because its selectors
have no read for many correlation ids at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from apps.eventbus.bounds import clean_text
from apps.eventbus.deadletters.services import REPROCESSABLE
from apps.eventbus.jetstream import monitoring
from apps.eventbus.jetstream.monitoring import ConsumerState, NatsUnreachable
from apps.eventbus.models import DeadLetter, OutboxDeadLetter, OutboxEvent
from apps.inventory.selectors import stock_decisions_for_orders
from apps.payments.selectors import payments_for_orders

from .models import Order

ORDERS_CONSUMER = "orders"  # the saga's decision (apps/orders/consumers.py)
SAGA_FAILURES_CONSUMER = "saga-failures"  # cancels an order whose orders.created.v1 a step dead-lettered
NOT_FETCHING_AFTER = timedelta(seconds=60)  # no delivery for this long and no pull waiting: nobody fetches
ERROR_SHOWN = 160  # characters of a dead letter's error in an explanation


class Step(StrEnum):
    """What an order waits on, by the name of the consumer whose answer is missing."""

    PAYMENTS = "payments"
    INVENTORY = "inventory"
    ORDERS = "orders"  # both steps heard, no decision


class CauseKind(StrEnum):
    """Most specific (and actionable) first: the order in which the page picks a link."""

    DEAD_LETTER = "dead letter"
    SET_ASIDE = "set aside by the relay"
    NOT_PUBLISHED = "not published"
    PAUSED = "paused"
    MISSING = "consumer missing"
    BACKLOG = "backlog"
    NOT_FETCHING = "not fetching"
    NATS_UNREACHABLE = "NATS unreachable"
    UNKNOWN = "unknown"


_PRIORITY = list(CauseKind)  # most specific first


@dataclass(frozen=True)
class Cause:
    kind: CauseKind
    text: str  # one line, bounded, safe to log and to put in a reason
    url: str = ""  # where an operator acts on it: the dead letter, the consumers page, ...
    label: str = "consumers and streams"  # the link's text


@dataclass(frozen=True)
class Wait:
    """One step the order waits on: where that step is, who must act, and what explains it."""

    step: Step
    state: str  # what the step's own records say, e.g. "a charge may be in flight (payment #7 PENDING)"
    consumer: str  # the consumer that must act next
    causes: tuple[Cause, ...]
    charge_in_flight: bool = False

    def text(self) -> str:
        return f"{self.state} ({'; '.join(cause.text for cause in self.causes)})"


@dataclass(frozen=True)
class Stuck:
    order: Order
    age: timedelta
    waits: tuple[Wait, ...]

    @property
    def waiting_on(self) -> tuple[Step, ...]:
        return tuple(wait.step for wait in self.waits)

    @property
    def charge_in_flight(self) -> bool:
        """Payments holds a PENDING payment: a charge may be in flight (a cancellation waits for it)."""
        return any(wait.charge_in_flight for wait in self.waits)

    @property
    def causes(self) -> tuple[Cause, ...]:
        return tuple(cause for wait in self.waits for cause in wait.causes)

    @property
    def first_link(self) -> Cause | None:
        """Where to act first: of the causes that have a page, the most specific kind (a dead
        letter before an unpublished event before a consumer's state), of the first step."""
        linked = [cause for cause in self.causes if cause.url]
        return min(linked, key=lambda cause: _PRIORITY.index(cause.kind), default=None)

    def explanation(self) -> str:
        """One line: each step waited on, where it is and why."""
        return "; ".join(f"{wait.step}: {wait.text()}" for wait in self.waits)


def stuck_after() -> timedelta:
    return timedelta(seconds=settings.ORDERS_STUCK_AFTER_SECONDS)


def pending_before(cutoff: datetime) -> QuerySet[Order]:
    """PENDING orders created before ``cutoff``, oldest first (through ``orders_pending_created``)."""
    return Order.objects.filter(status=Order.Status.PENDING, created_at__lt=cutoff).order_by("created_at", "pk")


def stuck_orders_count(*, older_than: timedelta | None = None) -> int:
    return pending_before(timezone.now() - (older_than or stuck_after())).count()


def stuck_orders(*, older_than: timedelta | None = None, limit: int = 100, after: Stuck | None = None) -> list[Stuck]:
    """The oldest ``limit`` PENDING orders older than ``older_than`` (default: the setting),
    after ``after`` (the last of a previous page), each with what it waits on and why.

    Never raises for NATS: when it does not answer, the consumer's part of an explanation says
    "NATS unreachable". ``limit`` is capped at 500.
    """
    now = timezone.now()
    orders = pending_before(now - (older_than or stuck_after()))
    if after is not None:
        created = after.order.created_at
        orders = orders.filter(Q(created_at__gt=created) | Q(created_at=created, pk__gt=after.order.pk))
    orders = list(orders[: max(1, min(limit, 500))])
    if not orders:
        return []
    ids = [str(order.pk) for order in orders]
    facts = _Facts(
        payments=payments_for_orders(ids),
        stock=stock_decisions_for_orders(ids),
        dead_letters=_open_dead_letters(ids),
        unpublished=_unpublished(ids),
        set_aside=_set_aside(ids),
        consumers=_consumer_causes(),
    )
    return [Stuck(order, now - order.created_at, tuple(_waits(order, facts))) for order in orders]


# -- what each step's records say -------------------------------------------------------------


@dataclass
class _Facts:
    payments: dict
    stock: dict
    dead_letters: dict[tuple[str, str], list[DeadLetter]]  # (order id, consumer) -> open, newest first
    unpublished: dict[str, list[OutboxEvent]]  # order id -> events the relay has not published
    set_aside: dict[str, list[OutboxDeadLetter]]  # order id -> events JetStream refused
    consumers: dict[str, list[Cause]]  # consumer -> what its live state explains (empty: nothing)


def _waits(order: Order, facts: _Facts) -> list[Wait]:
    order_id = str(order.pk)
    waits = []
    if order.payment_state == Order.PaymentState.UNKNOWN:
        payment = facts.payments.get(order_id)
        if payment is None:
            waits.append(_step_wait(order_id, Step.PAYMENTS, "no payment yet", facts))
        elif payment.status == payment.Status.PENDING:
            state = f"a charge may be in flight (payment #{payment.pk} PENDING since {_clock(payment.created_at)})"
            waits.append(_step_wait(order_id, Step.PAYMENTS, state, facts, in_flight=True))
        else:
            state = f"payment #{payment.pk} is {payment.status}; the orders consumer has not heard"
            waits.append(_heard_wait(order_id, Step.PAYMENTS, state, facts))
    if order.stock_state == Order.StockState.UNKNOWN:
        decision = facts.stock.get(order_id)
        if decision is None:
            waits.append(_step_wait(order_id, Step.INVENTORY, "no stock decision yet", facts))
        else:
            state = f"inventory decided {decision.outcome}; the orders consumer has not heard"
            waits.append(_heard_wait(order_id, Step.INVENTORY, state, facts))
    if not waits:
        state = f"payment {order.payment_state} and stock {order.stock_state} heard, but no decision"
        waits.append(Wait(Step.ORDERS, state, ORDERS_CONSUMER, _explain(order_id, ORDERS_CONSUMER, "", facts)))
    return waits


def _step_wait(order_id: str, step: Step, state: str, facts: _Facts, *, in_flight: bool = False) -> Wait:
    """A step that has not answered the order's ``orders.created.v1``: its consumer must act."""
    causes = _explain(order_id, step.value, "orders.created.", facts, saga_failures=True)
    return Wait(step, state, step.value, causes, charge_in_flight=in_flight)


def _heard_wait(order_id: str, step: Step, state: str, facts: _Facts) -> Wait:
    """A step that answered; the orders consumer has not heard its ``<step>.*`` event."""
    return Wait(step, state, ORDERS_CONSUMER, _explain(order_id, ORDERS_CONSUMER, f"{step}.", facts, of_step=step))


def _explain(
    order_id: str,
    consumer: str,
    events: str,
    facts: _Facts,
    *,
    saga_failures: bool = False,
    of_step: Step | None = None,
) -> tuple[Cause, ...]:
    """What explains that ``consumer`` has not acted on the order's ``events`` (a subject prefix)."""
    causes = []
    dead = [
        letter
        for letter in facts.dead_letters.get((order_id, consumer), ())
        if of_step is None or letter.subject.startswith(f"{of_step}.")
    ]
    causes += [_dead_letter_cause(letter) for letter in dead]
    if dead and saga_failures:
        # The step gave up: saga-failures cancels such an order. Why has it not?
        causes += [*_dead_letters_of(order_id, SAGA_FAILURES_CONSUMER, facts), *facts.consumers[SAGA_FAILURES_CONSUMER]]
    if events:
        causes += [
            Cause(
                CauseKind.SET_ASIDE,
                f"the relay set {row.subject} aside: {_short(row.reason)}",
                _change_url(row),
                f"{row.subject} set aside",
            )
            for row in facts.set_aside.get(order_id, ())
            if row.subject.startswith(events)
        ]
        unpublished = sorted(
            {row.subject for row in facts.unpublished.get(order_id, ()) if row.subject.startswith(events)}
        )
        if unpublished:
            url = f"{reverse('admin:eventbus_outboxevent_changelist')}?q={order_id}"
            text = f"the relay has not published {', '.join(unpublished)}"
            causes.append(Cause(CauseKind.NOT_PUBLISHED, text, url, "the outbox"))
    if not causes:  # the message reached the consumer's stream and is not dead-lettered: is it behind?
        causes += facts.consumers[consumer]
    if not causes:
        causes.append(
            Cause(
                CauseKind.UNKNOWN,
                f"unknown: no dead letter, pause or backlog of {consumer} explains it (see the order's timeline)",
                _consumers_url(consumer),
            )
        )
    return tuple(causes)


def _dead_letters_of(order_id: str, consumer: str, facts: _Facts) -> list[Cause]:
    return [_dead_letter_cause(letter) for letter in facts.dead_letters.get((order_id, consumer), ())]


def _dead_letter_cause(letter: DeadLetter) -> Cause:
    error = f"{_short(letter.error_type)}: {_short(letter.error)}"
    text = f"dead letter #{letter.pk} of {letter.consumer} ({letter.status}): {error}"
    return Cause(CauseKind.DEAD_LETTER, text, _change_url(letter), f"dead letter #{letter.pk}")


# -- the reads: one query each, whatever the page's size --------------------------------------


def _open_dead_letters(order_ids: list[str]) -> dict[tuple[str, str], list[DeadLetter]]:
    """Open dead letters (pending, reprocessing, failed again) of the saga's consumers for these
    orders (a saga message's correlation id is its order's id), newest first."""
    consumers = [Step.PAYMENTS, Step.INVENTORY, ORDERS_CONSUMER, SAGA_FAILURES_CONSUMER]
    letters = (
        DeadLetter.objects.filter(correlation_id__in=order_ids, consumer__in=consumers, status__in=REPROCESSABLE)
        .only("pk", "consumer", "subject", "correlation_id", "status", "error_type", "error")
        .order_by("-last_failed_at", "-pk")
    )
    found: dict[tuple[str, str], list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        found[(letter.correlation_id, letter.consumer)].append(letter)
    return found


def _unpublished(order_ids: list[str]) -> dict[str, list[OutboxEvent]]:
    """Events of these orders still in the outbox (through ``outbox_unsent_aggregate_idx``)."""
    rows = OutboxEvent.objects.filter(sent_at__isnull=True, aggregate_id__in=order_ids).only("aggregate_id", "subject")
    return _by_order(rows)


def _set_aside(order_ids: list[str]) -> dict[str, list[OutboxDeadLetter]]:
    """Events of these orders the relay set aside (JetStream refused them) and nobody requeued."""
    rows = OutboxDeadLetter.objects.filter(status=OutboxDeadLetter.Status.REFUSED, aggregate_id__in=order_ids).only(
        "pk", "aggregate_id", "subject", "reason"
    )
    return _by_order(rows)


def _by_order(rows: Iterable) -> dict[str, list]:
    found = defaultdict(list)
    for row in rows:
        found[row.aggregate_id].append(row)
    return found


def _consumer_causes() -> dict[str, list[Cause]]:
    """For each consumer of the saga, what its live state explains: paused, missing, behind.
    One snapshot of NATS; its failure becomes the cause "NATS unreachable"."""
    names = (Step.PAYMENTS.value, Step.INVENTORY.value, ORDERS_CONSUMER, SAGA_FAILURES_CONSUMER)
    try:
        _, states = monitoring.snapshot()
    except (NatsUnreachable, RuntimeError) as exc:  # RuntimeError: no NATS_URL configured
        text = f"NATS unreachable, so the state of {{}} is unknown: {_short(exc)}"
        return {name: [Cause(CauseKind.NATS_UNREACHABLE, text.format(name), _consumers_url(name))] for name in names}
    by_name = {state.name: state for state in states}
    return {name: _state_causes(name, by_name.get(name)) for name in names}


def _state_causes(name: str, state: ConsumerState | None) -> list[Cause]:
    url = _consumers_url(name)
    if state is None:
        return [Cause(CauseKind.MISSING, f"{name} is not a declared consumer", url)]
    causes = []
    if state.paused:
        until = f" until {_clock(state.paused_until)}" if state.paused_until else ""
        causes.append(Cause(CauseKind.PAUSED, f"{name} is paused{until}", url))
    if state.missing:
        text = f"{name} has no durable on {', '.join(state.missing)} (run nats_setup, start runconsumer {name})"
        causes.append(Cause(CauseKind.MISSING, text, url))
    if state.backlog:
        text = f"{name} has a backlog: {state.pending} not delivered, {state.ack_pending} unacknowledged"
        causes.append(Cause(CauseKind.BACKLOG, text, url))
        stale = state.last_active is None or timezone.now() - state.last_active > NOT_FETCHING_AFTER
        if state.waiting == 0 and stale and not state.paused:
            last = f"last delivery {_clock(state.last_active)}" if state.last_active else "never delivered"
            causes.append(Cause(CauseKind.NOT_FETCHING, f"no runner of {name} is fetching ({last})", url))
    return causes


# -- small things ------------------------------------------------------------------------------


def _consumers_url(name: str) -> str:
    return f"{reverse('admin:operations_consumer_changelist')}#consumer-{name}"


def _change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def _short(value) -> str:
    """A message's text (an error, a reason) as one bounded line: it came from outside."""
    return clean_text(" ".join(str(value).split()), ERROR_SHOWN, single_line=True)


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def age_text(age: timedelta) -> str:
    """``2 d 3 h``, ``3 h 05 min``, ``12 min``, ``40 s``: short enough for a reason and a column."""
    seconds = int(age.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min" if minutes else f"{seconds} s"
