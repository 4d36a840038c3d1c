"""Throttling (429 with Retry-After) and the request size limit (413), in the error shape."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.support import make_user

from .conftest import GENEROUS
from .support import assert_error, client_for, written

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        settings.API = {**settings.API, "THROTTLE_RATES": {**GENEROUS, **rates}}

    return set_rates


def test_a_user_over_the_rate_gets_429_with_retry_after(rates, alice, bob):
    rates(user="3/minute")
    api = client_for(alice)
    assert [api.get("/api/products/").status_code for _ in range(3)] == [200, 200, 200]

    throttled = api.get("/api/orders/")

    assert_error(throttled, 429, "throttled")
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert client_for(bob).get("/api/products/").status_code == 200, "each user has a budget of their own"


def test_anonymous_clients_are_throttled_by_address(rates):
    rates(anon="2/hour")
    assert [APIClient().get("/api/schema/").status_code for _ in range(2)] == [200, 200]

    throttled = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")

    assert_error(throttled, 429, "throttled")
    assert 60 < int(throttled["Retry-After"]) <= 3600
    spoofed = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json", HTTP_X_FORWARDED_FOR="10.9.8.7")
    assert spoofed.status_code == 429, "X-Forwarded-For is not trusted without API_NUM_PROXIES"


def test_password_guesses_are_throttled(rates):
    rates(token="3/minute")
    make_user("carol")
    for _ in range(3):
        APIClient().post("/api/auth/token/", {"username": "carol", "password": "guess"}, format="json")

    response = APIClient().post("/api/auth/token/", {"username": "carol", "password": "pw-carol"}, format="json")

    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) >= 1


def test_a_body_over_the_limit_is_a_413_and_writes_nothing(api, catalogue, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    before = written()
    body = {"lines": [{"sku": "KB-001", "quantity": 1}], "currency": "EUR", "note": "x" * 5000}

    response = api.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="big")

    error = assert_error(response, 413, "request_too_large")
    assert "4096 bytes" in error["message"]
    assert written() == before
    token = APIClient().post("/api/auth/token/", {"username": "x", "password": "y" * 5000}, format="json")
    assert_error(token, 413, "request_too_large")


def test_a_body_under_the_limit_goes_through(api, catalogue, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    response = api.post("/api/orders/", {"lines": [{"sku": "KB-001", "quantity": 1}], "currency": "EUR"}, format="json")
    assert response.status_code == 201
