"""The settlement table (``consuming/settlement.py``), row by row, and the back-off it uses."""

from __future__ import annotations

import psycopg
import pytest
from django.db import InterfaceError, OperationalError

from apps.eventbus.consuming.settlement import SETTLED, Cause, Processed, Settle, Verdict, decide
from apps.eventbus.contracts import ContractError
from apps.eventbus.errors import DependencyDown, PermanentError, RetryableError
from apps.eventbus.registry import ConsumerSpec

BACKOFF = ConsumerSpec("unit", handlers={}, backoff=(1.0, 5.0, 30.0)).nak_delay
MAX_DELIVER = 4


def settle(processed: Processed, num_delivered: int = 1) -> Settle:
    return decide(processed, num_delivered=num_delivered, max_deliver=MAX_DELIVER, backoff=BACKOFF)


@pytest.mark.parametrize(
    ("processed", "expected"),
    [
        (Processed.HANDLED, Settle(Verdict.HANDLED)),
        (Processed.DUPLICATE, Settle(Verdict.DUPLICATE)),
        (Processed.refused(OperationalError("gone")), Settle(Verdict.HELD, Cause.DATABASE_DOWN, 5.0)),
        (Processed.refused(InterfaceError("closed")), Settle(Verdict.HELD, Cause.DATABASE_DOWN, 5.0)),
        (Processed.refused(psycopg.OperationalError("gone")), Settle(Verdict.HELD, Cause.DATABASE_DOWN, 5.0)),
        (Processed.raised(DependencyDown("breaker", pause=12.0)), Settle(Verdict.HELD, Cause.DEPENDENCY_DOWN, 12.0)),
        (Processed.refused(ContractError("bad json")), Settle(Verdict.DEAD_LETTERED, Cause.POISON)),
        (Processed.raised(PermanentError("refused")), Settle(Verdict.DEAD_LETTERED, Cause.PERMANENT)),
        (Processed.raised(RetryableError("later", delay=7.5)), Settle(Verdict.RETRIED, Cause.RETRYABLE, 7.5)),
        (Processed.raised(RetryableError("later")), Settle(Verdict.RETRIED, Cause.RETRYABLE, 1.0)),
        (Processed.raised(ValueError("a bug, perhaps transient")), Settle(Verdict.RETRIED, Cause.RETRYABLE, 1.0)),
    ],
    ids=lambda value: value.verdict.value if isinstance(value, Settle) else None,
)
def test_each_row_of_the_table_on_a_first_delivery(processed, expected):
    assert settle(processed) == expected


@pytest.mark.parametrize(
    ("processed", "verdict"),
    [
        (Processed.raised(ValueError("still failing")), Verdict.DEAD_LETTERED),
        (Processed.raised(RetryableError("still down", delay=3)), Verdict.DEAD_LETTERED),
        (Processed.HANDLED, Verdict.HANDLED),
        (Processed.DUPLICATE, Verdict.DUPLICATE),
        # A dependency every message needs is not the message's fault: held even on its last delivery.
        (Processed.refused(OperationalError("gone")), Verdict.HELD),
        (Processed.raised(DependencyDown("breaker", pause=1)), Verdict.HELD),
    ],
)
def test_the_last_delivery_dead_letters_what_would_be_retried_and_only_that(processed, verdict):
    result = settle(processed, num_delivered=MAX_DELIVER)
    assert result.verdict is verdict
    if verdict is Verdict.DEAD_LETTERED:
        assert result.cause is Cause.EXHAUSTED


def test_a_retry_waits_by_the_back_off_schedule_and_then_its_last_step():
    delays = [settle(Processed.raised(RuntimeError("x")), n).delay for n in range(1, MAX_DELIVER)]
    assert delays == [1.0, 5.0, 30.0]
    assert BACKOFF(10) == 30.0, "beyond the schedule: its last step"


def test_a_zero_delay_from_the_error_falls_back_to_the_schedule():
    assert settle(Processed.raised(RetryableError("x", delay=0)), 2).delay == 5.0


def test_dependency_down_is_held_before_it_is_retryable():
    """DependencyDown is a RetryableError: the table must see the outage first."""
    assert issubclass(DependencyDown, RetryableError)
    assert settle(Processed.raised(DependencyDown("down", pause=30)), 1).verdict is Verdict.HELD


def test_a_raised_error_carries_its_traceback_and_a_refused_one_none():
    try:
        raise PermanentError("refused by a rule")
    except PermanentError as exc:
        raised = Processed.raised(exc)
    assert "Traceback" in raised.traceback and "refused by a rule" in raised.traceback
    assert Processed.refused(ContractError("bad")).traceback == ""


def test_only_handled_and_duplicate_are_settled_and_every_verdict_is_a_metric_label():
    assert {verdict for verdict in Verdict if verdict in SETTLED} == {Verdict.HANDLED, Verdict.DUPLICATE}
    assert [verdict.value for verdict in Verdict] == ["handled", "duplicate", "retried", "held", "dead_lettered"]
