"""The HTTP client of the payment provider. Retryable failures raise RetryableError; what
retrying cannot fix raises PermanentError; a decline is an answer, not an error."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import httpx
from django.conf import settings

from apps.eventbus.errors import DependencyDown, PermanentError, RetryableError

TIMEOUT = httpx.Timeout(10.0, connect=2.0)


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    charge_id: str
    decline_code: str | None = None


@cache
def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=TIMEOUT)


class CircuitBreaker:
    """Consecutive failures of the gateway open the circuit: callers then get DependencyDown,
    which pauses the payments consumer on the server; each pause ends in a probe (the next
    delivered message), and every failed probe doubles the pause, up to a limit."""

    def __init__(self, *, threshold: int, pause: float, max_pause: float) -> None:
        self.threshold, self.base_pause, self.max_pause = threshold, pause, max_pause
        self.failures, self.pause = 0, pause
        self._lock = threading.Lock()

    def success(self) -> None:
        with self._lock:
            self.failures, self.pause = 0, self.base_pause

    def failure(self, exc: RetryableError) -> RetryableError:
        """The error to raise for this failure: DependencyDown once the circuit is open."""
        with self._lock:
            self.failures += 1
            if self.failures < self.threshold:
                return exc
            pause, self.pause = self.pause, min(self.pause * 2, self.max_pause)
            return DependencyDown(f"circuit open after {self.failures} gateway failures: {exc}", pause=pause)


@cache
def breaker() -> CircuitBreaker:
    config = settings.PAYMENT_GATEWAY_BREAKER
    return CircuitBreaker(threshold=config["THRESHOLD"], pause=config["PAUSE"], max_pause=config["MAX_PAUSE"])


def _post(path: str, body: dict, idempotency_key: str) -> httpx.Response:
    try:
        response = _client(settings.PAYMENT_GATEWAY_URL).post(
            path, json=body, headers={"Idempotency-Key": idempotency_key}
        )
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
