"""Clients and assertions shared by the API tests (and the other tests that call the API)."""

from __future__ import annotations

from django.db import transaction
from rest_framework.test import APIClient

from apps.api.models import IdempotencyKey
from apps.api.services import auth_token_issue
from apps.eventbus.deadletters.services import dead_letter_mark_resolved
from apps.eventbus.models import DeadLetter, OutboxEvent
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


def client_for(user=None) -> APIClient:
    """A client that sends the user's token (anonymous without a user)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {auth_token_issue(user=user).key}")
    return client


def resolve(dead_letter: DeadLetter) -> DeadLetter:
    with transaction.atomic():
        dead_letter_mark_resolved(dead_letter_id=dead_letter.pk, note="handled")
    dead_letter.refresh_from_db()
    return dead_letter
