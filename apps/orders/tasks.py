"""The stuck-orders policy, run by Celery beat every minute (``orders.apply_stuck_policy``).

``ORDERS_STUCK_POLICY``:

- ``report`` (the default): count the stuck orders and those PENDING longer than
  ``ORDERS_STUCK_CANCEL_AFTER_SECONDS``, log them, change nothing;
- ``cancel``: also cancel each order PENDING longer than that, oldest first, at most
  ``MAX_CANCELLED`` a run, through ``order_cancel_as_operator`` with no actor (the platform):
  payments refunds and inventory releases once, and ``operator.order_cancelled.v1`` records
  the reason (its age and what it waits on) on the order's timeline.

Each order is cancelled in its own transaction, only if it is still PENDING
(``expected_status``): an order the saga decided meanwhile is skipped.

**An order whose charge may be in flight is skipped** (payments holds its Payment PENDING):
cancelling it would not stop the charge, only make payments wait for it before refunding,
and if the charge never ends (the provider or payments is down) that cancellation is retried
until it is dead-lettered, leaving a CANCELLED order whose money nobody refunds. Left
PENDING it stays on the stuck-orders page, "waiting on payments: a charge may be in flight",
for an operator; the policy cancels it on a later run once payments has decided it.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from .errors import OrderError
from .models import Order
from .services import order_cancel_as_operator
from .stuck import Stuck, age_text, stuck_orders, stuck_orders_count

logger = logging.getLogger(__name__)

MAX_CANCELLED = 100  # orders cancelled per run, at most
MAX_SCANNED = 500  # stuck orders looked at per run (orders skipped included), at most
PAGE = 100
MAX_REASON = 500


@shared_task(name="orders.apply_stuck_policy")
def apply_stuck_policy() -> dict[str, int | str]:
    return stuck_policy_apply(
        policy=settings.ORDERS_STUCK_POLICY,
        cancel_after=timedelta(seconds=settings.ORDERS_STUCK_CANCEL_AFTER_SECONDS),
    )


def stuck_policy_apply(*, policy: str, cancel_after: timedelta) -> dict[str, int | str]:
    """Apply ``policy`` (``report`` or ``cancel``) once; returns the counts it logs."""
    if policy not in ("report", "cancel"):
        raise ValueError(f"unknown stuck-orders policy {policy!r}")
    counts = Counter(stuck=stuck_orders_count(), overdue=stuck_orders_count(older_than=cancel_after))
    if policy == "cancel" and counts["overdue"]:
        _cancel_overdue(cancel_after, counts)
    figures = {"policy": policy, **{name: counts[name] for name in _FIGURES}}
    level = logging.WARNING if counts["overdue"] or counts["failed"] else logging.INFO
    logger.log(
        level,
        "stuck orders (policy %s): %d stuck, %d PENDING longer than %d s; cancelled %d, skipped %d with a charge "
        "in flight, %d decided meanwhile, %d failed",
        policy, counts["stuck"], counts["overdue"], cancel_after.total_seconds(), counts["cancelled"],
        counts["skipped_charge_in_flight"], counts["skipped_decided"], counts["failed"],
        extra={"stuck_policy": figures},
    )  # fmt: skip
    return figures


_FIGURES = ("stuck", "overdue", "cancelled", "skipped_charge_in_flight", "skipped_decided", "failed")


def _cancel_overdue(cancel_after: timedelta, counts: Counter) -> None:
    scanned, last = 0, None
    while scanned < MAX_SCANNED and counts["cancelled"] < MAX_CANCELLED:
        page = stuck_orders(older_than=cancel_after, limit=min(PAGE, MAX_SCANNED - scanned), after=last)
        for stuck in page:
            if counts["cancelled"] >= MAX_CANCELLED:
                return
            counts[_cancel(stuck)] += 1
        scanned += len(page)
        if len(page) < PAGE:
            return
        last = page[-1]


def _cancel(stuck: Stuck) -> str:
    """Cancel one overdue order in its own transaction; returns what came of it (a count's name)."""
    if stuck.charge_in_flight:  # counted, not logged one by one: they come back every run
        return "skipped_charge_in_flight"
    try:
        order_cancel_as_operator(
            order_id=str(stuck.order.pk), reason=reason(stuck), actor=None, expected_status=Order.Status.PENDING
        )
    except OrderError as exc:  # InvalidTransition, OrderNotFound: decided (or gone) meanwhile
        logger.info("stuck order %s not cancelled: %s", stuck.order.pk, exc)
        return "skipped_decided"
    except Exception:  # one order must not stop the others; the next run tries it again
        logger.exception("stuck order %s: the cancellation failed", stuck.order.pk)
        return "failed"
    logger.warning("stuck order %s cancelled by the stuck-orders policy", stuck.order.pk)
    return "cancelled"


def reason(stuck: Stuck) -> str:
    """Why the platform cancelled it, at most 500 characters (the service's bound)."""
    steps = ", ".join(stuck.waiting_on)
    text = f"stuck policy: PENDING for {age_text(stuck.age)}; waiting on {steps}: {stuck.explanation()}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
