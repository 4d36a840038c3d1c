"""Assertions shared by the API tests."""

from __future__ import annotations

from apps.api.models import IdempotencyKey
from apps.eventbus.models import OutboxEvent
from apps.orders.models import Order, OrderLine


def assert_error(response, status: int, code: str) -> dict:
    """The response is ``status`` with the one error shape and ``code``; returns the error."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    assert all(
        isinstance(messages, list) and all(isinstance(m, str) for m in messages)
        for messages in error["fields"].values()
    )
    return error


def written() -> tuple[int, int, int, int]:
    """What a request may write: orders, their lines, outbox events, idempotency records."""
    return Order.objects.count(), OrderLine.objects.count(), OutboxEvent.objects.count(), IdempotencyKey.objects.count()
