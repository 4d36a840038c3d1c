"""People and dead letters for the cockpit's tests."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.eventbus.deadletters.services import dead_letter_record
from apps.inventory.services import product_ensure
from apps.operations.roles import AUDITORS, OPERATORS
from apps.orders.services import order_place
from tests.support import make_user
from tests.testapp.events import SomethingHappened

_sequence = itertools.count(1)


@pytest.fixture
def operator(db):
    return make_user("olivia", OPERATORS)


@pytest.fixture
def auditor(db):
    return make_user("arthur", AUDITORS)


@pytest.fixture
def order(db):
    product_ensure(sku="SKU-COCKPIT", name="Cockpit", price=Decimal("12.50"), stock_on_hand=100)
    return order_place(customer_id="customer-1", lines=[("SKU-COCKPIT", 2)])


def make_dead_letter(
    *,
    consumer: str = "testing",
    value: int | str = 1,
    correlation_id: str | None = None,
    data: str | None = None,
    error_type: str = "PermanentError",
    error: str = "value refused by a business rule",
    traceback: str | None = 'Traceback (most recent call last):\n  File "handlers.py", line 1\nPermanentError: refused',
):
    """A dead letter as the dead-letters consumer records it (through its service): the
    original body and headers, the error and its traceback."""
    event = SomethingHappened(value=1, correlation_id=correlation_id)
    body = data if data is not None else json.dumps({**event.model_dump(mode="json"), "value": value})
    return dead_letter_record(
        consumer=consumer,
        stream="TESTING",
        subject="testing.happened.v1",
        stream_sequence=next(_sequence),
        message_id=event.message_id,
        correlation_id=correlation_id or "",
        data=body,
        headers={"Content-Type": "application/json", "Nats-Msg-Id": event.message_id},
        error_type=error_type,
        error=error,
        traceback=traceback or "",
        attempts=1,
        failed_at=timezone.now(),
    )


@pytest.fixture
def dead_letter(db):
    return make_dead_letter()
