"""The HTTP client of the payment provider. Retryable failures raise RetryableError; what
retrying cannot fix raises PermanentError; a decline is an answer, not an error."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import httpx
from django.conf import settings

from apps.eventbus.errors import PermanentError, RetryableError

TIMEOUT = httpx.Timeout(10.0, connect=2.0)


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    charge_id: str
    decline_code: str | None = None


@cache
def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=TIMEOUT)


def _post(path: str, body: dict, idempotency_key: str) -> httpx.Response:
    try:
        response = _client(settings.PAYMENT_GATEWAY_URL).post(
            path, json=body, headers={"Idempotency-Key": idempotency_key}
        )
    except httpx.TransportError as exc:  # timeouts, refused connections, resets
        raise RetryableError(f"payment gateway unreachable: {type(exc).__name__}: {exc}") from exc
    if response.status_code in (429, 503) or response.status_code >= 500:
        retry_after = response.headers.get("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise RetryableError(f"payment gateway answered {response.status_code}", delay=delay)
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
