"""The payment gateway's circuit breaker, on a clock the test moves (no servers needed)."""

import pytest

from apps.eventbus.errors import DependencyDown, RetryableError
from apps.payments.gateway import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def breaker(clock):
    return CircuitBreaker(threshold=3, pause=10, max_pause=40, clock=clock)


def fail(breaker):
    return breaker.failure(RetryableError("503"))


def test_failures_below_the_threshold_are_retried_as_they_are(breaker):
    assert [type(fail(breaker)) for _ in range(2)] == [RetryableError, RetryableError]
    breaker.check()  # still closed: calls go through


def test_the_threshold_opens_the_circuit_and_calls_fail_at_once_until_the_pause_ends(breaker, clock):
    fail(breaker), fail(breaker)
    opened = fail(breaker)
    assert isinstance(opened, DependencyDown) and opened.pause == 10
    clock.now += 4
    with pytest.raises(DependencyDown) as refused:
        breaker.check()
    assert refused.value.pause == pytest.approx(6)
    clock.now += 6
    breaker.check()  # the pause is over: the next call is the probe


def test_failures_of_calls_already_in_flight_neither_reopen_nor_lengthen_the_pause(breaker, clock):
    for _ in range(3):
        fail(breaker)
    clock.now += 1
    late = [fail(breaker) for _ in range(20)]  # the rest of a concurrent batch
    assert all(isinstance(error, DependencyDown) for error in late)
    assert {round(error.pause) for error in late} == {9}
    clock.now += 9
    probe = fail(breaker)
    assert isinstance(probe, DependencyDown) and probe.pause == 20, "a failed probe doubles the pause"


def test_the_pause_doubles_up_to_its_limit_and_a_success_closes_the_circuit(breaker, clock):
    pauses = []
    for _ in range(5):
        while not isinstance(error := fail(breaker), DependencyDown):
            pass
        pauses.append(error.pause)
        clock.now += error.pause
    assert pauses == [10, 20, 40, 40, 40]
    breaker.success()
    assert isinstance(fail(breaker), RetryableError) and not isinstance(fail(breaker), DependencyDown)
