"""API test fixtures: users, a catalogue; throttles out of the way unless a test sets its own
rates (clients with a token and other helpers: ``support.py``). Operators, auditors and dead letters come from the root
``conftest.py`` and ``tests/factories.py``."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache

from apps.inventory.services import product_ensure
from tests.support import make_user

from .support import client_for

CATALOGUE = [("KB-001", "Keyboard", Decimal("89.90"), 100), ("MS-002", "Mouse", Decimal("34.50"), 200)]
GENEROUS = {"anon": "10000/minute", "user": "10000/minute", "token": "10000/minute"}


@pytest.fixture(autouse=True)
def generous_throttles(settings):
    settings.API = {**settings.API, "THROTTLE_RATES": dict(GENEROUS)}
    cache.clear()
    yield
    cache.clear()


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
