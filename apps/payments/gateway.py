"""The HTTP client of the payment provider. Retryable failures raise RetryableError; what
retrying cannot fix raises PermanentError; a decline is an answer, not an error.

Calls are slow (a card provider answers in 200-600 ms), so ``each`` makes many at once:
at most ``PAYMENT_GATEWAY_CONCURRENCY`` in flight per process, on one pool of threads and
one pool of connections.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import TypeVar

import httpx
from django.conf import settings
from prometheus_client import Counter, Gauge

from apps.eventbus.errors import DependencyDown, PermanentError, RetryableError

TIMEOUT = httpx.Timeout(10.0, connect=2.0)

CIRCUIT_OPEN = Gauge(
    "payment_gateway_circuit_open",
    "1 from the moment the circuit breaker opens until a call to the provider succeeds again (open, then "
    "half-open: payments are paused); 0 while it is closed",
)
CIRCUIT_OPENINGS = Counter("payment_gateway_circuit_openings", "Times the circuit breaker opened (or opened again)")


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    charge_id: str
    decline_code: str | None = None


T = TypeVar("T")
R = TypeVar("R")


@cache
def _client(base_url: str, concurrency: int) -> httpx.Client:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.Client(base_url=base_url, timeout=TIMEOUT, limits=limits)


@cache
def _pool(concurrency: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="payment-gateway")


def each(call: Callable[[T], R], items: Sequence[T]) -> list[R | Exception]:
    """``call(item)`` for every item, many at once; each result, or the exception it raised, in order."""
    if len(items) <= 1:
        return [_outcome(call, item) for item in items]
    pool = _pool(settings.PAYMENT_GATEWAY_CONCURRENCY)
    # Each call runs in a copy of the caller's context: its trace and log fields go with it.
    contexts = [contextvars.copy_context() for _ in items]
    return list(pool.map(lambda context, item: context.run(_outcome, call, item), contexts, items))


def _outcome(call: Callable[[T], R], item: T) -> R | Exception:
    try:
        return call(item)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it for its own event
        return exc


class CircuitBreaker:
    """Consecutive failures of the gateway open the circuit for a pause: meanwhile calls fail
    at once with DependencyDown (no request is sent), which pauses the payments consumer on
    the server. The first call after the pause is the probe: a success closes the circuit, a
    failure opens it again for twice the pause, up to a limit. Failures of calls that were
    already in flight when the circuit opened belong to the same opening: they neither open it
    again nor lengthen the pause."""

    def __init__(
        self, *, threshold: int, pause: float, max_pause: float, clock=time.monotonic, metrics: bool = False
    ) -> None:
        self.threshold, self.base_pause, self.max_pause, self.clock = threshold, pause, max_pause, clock
        self.failures, self.pause, self.open_until = 0, pause, None
        self.metrics = metrics  # the process's breaker sets CIRCUIT_OPEN and CIRCUIT_OPENINGS
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise DependencyDown while the circuit is open."""
        with self._lock:
            remaining = self._remaining()
        if remaining is not None:
            raise DependencyDown(f"circuit open ({self.failures} gateway failures)", pause=remaining)

    def success(self) -> None:
        with self._lock:
            self.failures, self.pause, self.open_until = 0, self.base_pause, None
            if self.metrics:
                CIRCUIT_OPEN.set(0)

    def failure(self, exc: RetryableError) -> RetryableError:
        """The error to raise for this failure: DependencyDown once the circuit is open."""
        with self._lock:
            self.failures += 1
            remaining = self._remaining()
            if remaining is not None:
                return DependencyDown(f"circuit open ({self.failures} gateway failures): {exc}", pause=remaining)
            if self.failures < self.threshold:
                return exc
            pause, self.pause = self.pause, min(self.pause * 2, self.max_pause)
            self.open_until = self.clock() + pause
            if self.metrics:
                CIRCUIT_OPEN.set(1)
                CIRCUIT_OPENINGS.inc()
            return DependencyDown(f"circuit open after {self.failures} gateway failures: {exc}", pause=pause)

    def _remaining(self) -> float | None:
        if self.open_until is None:
            return None
        remaining = self.open_until - self.clock()
        return remaining if remaining > 0 else None


@cache
def breaker() -> CircuitBreaker:
    config = settings.PAYMENT_GATEWAY_BREAKER
    return CircuitBreaker(
        threshold=config["THRESHOLD"], pause=config["PAUSE"], max_pause=config["MAX_PAUSE"], metrics=True
    )


def _post(path: str, body: dict, idempotency_key: str) -> httpx.Response:
    breaker().check()
    client = _client(settings.PAYMENT_GATEWAY_URL, settings.PAYMENT_GATEWAY_CONCURRENCY)
    try:
        response = client.post(path, json=body, headers={"Idempotency-Key": idempotency_key})
    except httpx.TransportError as exc:  # timeouts, refused connections, resets
        raise breaker().failure(RetryableError(f"payment gateway unreachable: {type(exc).__name__}: {exc}")) from exc
    if response.status_code in (429, 503) or response.status_code >= 500:
        retry_after = response.headers.get("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise breaker().failure(RetryableError(f"payment gateway answered {response.status_code}", delay=delay))
    breaker().success()
    return response


def charge(*, idempotency_key: str, amount: Decimal, currency: str, reference: str) -> ChargeResult:
    response = _post(
        "/v1/charges", {"amount": str(amount), "currency": currency, "reference": reference}, idempotency_key
    )
    body = response.json()
    if response.status_code in (200, 201):
        return ChargeResult(succeeded=True, charge_id=body["id"])
    if response.status_code == 402:
        return ChargeResult(succeeded=False, charge_id=body.get("id", ""), decline_code=body.get("decline_code"))
    raise PermanentError(f"payment gateway refused the charge ({response.status_code}): {body}")


def refund(*, idempotency_key: str, charge_id: str, amount: Decimal) -> str:
    response = _post("/v1/refunds", {"charge": charge_id, "amount": str(amount)}, idempotency_key)
    body = response.json()
    if response.status_code in (200, 201):
        return body["id"]
    raise PermanentError(f"payment gateway refused the refund ({response.status_code}): {body}")
