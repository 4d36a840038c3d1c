"""API test fixtures: users with tokens, a catalogue, dead letters; throttles out of the way
unless a test sets its own rates."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from apps.api.services import auth_token_issue
from apps.eventbus.deadletters.services import dead_letter_mark_resolved, dead_letter_record
from apps.eventbus.models import DeadLetter
from apps.inventory.services import product_ensure
from apps.operations.roles import AUDITORS, OPERATORS
from tests.support import make_user

CATALOGUE = [("KB-001", "Keyboard", Decimal("89.90"), 100), ("MS-002", "Mouse", Decimal("34.50"), 200)]
GENEROUS = {"anon": "10000/minute", "user": "10000/minute", "token": "10000/minute"}


@pytest.fixture(autouse=True)
def generous_throttles(settings):
    settings.API = {**settings.API, "THROTTLE_RATES": dict(GENEROUS)}
    cache.clear()
    yield
    cache.clear()


def client_for(user=None) -> APIClient:
    """A client that sends the user's token (anonymous without a user)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {auth_token_issue(user=user).key}")
    return client


@pytest.fixture
def catalogue(db):
    for sku, name, price, stock in CATALOGUE:
        product_ensure(sku=sku, name=name, price=price, stock_on_hand=stock)


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def api(alice):
    return client_for(alice)


@pytest.fixture
def operator(db):
    return make_user("olga", OPERATORS)


@pytest.fixture
def auditor(db):
    return make_user("arthur", AUDITORS)


def record_dead_letter(sequence: int, *, consumer="payments", subject="orders.created.v1", correlation_id="o-1", **kw):
    fields = {
        "stream": "ORDERS",
        "message_id": f"m-{sequence}",
        "data": json.dumps({"order_id": correlation_id}),
        "headers": {"Nats-Msg-Id": f"dlq:{consumer}:ORDERS:{sequence}"},
        "error_type": "ContractError",
        "error": "total_amount: field required",
        "attempts": 1,
        "failed_at": timezone.now(),
        **kw,
    }
    return dead_letter_record(
        consumer=consumer, subject=subject, stream_sequence=sequence, correlation_id=correlation_id, **fields
    )


def resolve(dead_letter: DeadLetter) -> DeadLetter:
    with transaction.atomic():
        dead_letter_mark_resolved(dead_letter_id=dead_letter.pk, note="handled")
    dead_letter.refresh_from_db()
    return dead_letter
