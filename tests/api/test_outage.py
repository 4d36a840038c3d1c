"""PostgreSQL stopped for real: every request to /api/ gets the API's 503 ``service_unavailable``
with ``Retry-After``, wherever it meets the outage (a view, token or session authentication,
the session middleware, one of Django's own views), DEBUG or not; once the server is back, the
same requests succeed. Over HTTP, through the live server's WSGI handler."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connections

from apps.api.services import auth_token_issue
from tests.support import make_user, password_of

ORDER = {"lines": [{"sku": "KB-001", "quantity": 1}]}


@pytest.fixture
def carol(live_server, catalogue) -> Iterator[tuple[str, requests.Session]]:
    """A customer with a token and a signed-in session (committed: the live server makes the
    database transactional)."""
    user = make_user("carol")
    session = requests.Session()
    session.get(f"{live_server.url}/api/session/login/")
    signed_in = session.post(
        f"{live_server.url}/api/session/login/",
        data={"username": "carol", "password": password_of("carol"), "next": "/api/orders/"},
        headers={"X-CSRFToken": session.cookies["csrftoken"]},
    )
    assert signed_in.status_code == 200 and django_settings.SESSION_COOKIE_NAME in session.cookies
    with session:  # closes its kept-alive connection: the live server's thread then closes its database one
        yield auth_token_issue(user=user).key, session


def requests_of(url: str, token: str, session: requests.Session) -> dict[str, requests.Response]:
    """One request for each place a request can meet the database first."""
    csrf = {"X-CSRFToken": session.cookies["csrftoken"]}
    return {
        "an order: token authentication (DRF)": requests.post(
            f"{url}/api/orders/",
            json=ORDER,
            headers={"Authorization": f"Token {token}", "Idempotency-Key": str(uuid.uuid4())},
        ),
        "a token: the view's own query (DRF)": requests.post(
            f"{url}/api/auth/token/", json={"username": "carol", "password": password_of("carol")}
        ),
        "an order: session authentication (DRF)": session.post(f"{url}/api/orders/", json=ORDER, headers=csrf),
        "a sign-in: Django's LoginView": session.post(
            f"{url}/api/session/login/",
            data={"username": "carol", "password": password_of("carol"), "next": "/api/products/"},
            headers=csrf,
        ),
    }


def assert_unavailable(name: str, response: requests.Response, retry_after: str) -> None:
    assert response.status_code == 503, (name, response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json", name
    assert response.json()["error"]["code"] == "service_unavailable", name
    assert set(response.json()["error"]) == {"code", "message", "fields"}, name
    assert response.headers["Retry-After"] == retry_after, name


def test_while_postgresql_is_down_the_api_answers_503_with_retry_after(live_server, postgres_server, carol, settings):
    token, session = carol
    url = live_server.url
    settings.API = {**settings.API, "UNAVAILABLE_RETRY_AFTER_SECONDS": 7}
    postgres_server.stop()
    try:
        for debug in (False, True):
            settings.DEBUG = debug
            for name, response in requests_of(url, token, session).items():
                assert_unavailable(f"{name}, DEBUG={debug}", response, "7")
            # A page that needs no database, until the session middleware saves the session after it.
            assert session.get(f"{url}/api/session/login/").status_code == 200
            settings.SESSION_SAVE_EVERY_REQUEST = True
            assert_unavailable(f"the session middleware, DEBUG={debug}", session.get(f"{url}/api/session/login/"), "7")
            settings.SESSION_SAVE_EVERY_REQUEST = False
    finally:
        if not postgres_server.is_running():
            postgres_server.start()
        connections.close_all()  # this thread's connection died with the server

    settings.DEBUG = False
    answers = requests_of(url, token, session)
    assert answers["an order: token authentication (DRF)"].status_code == 201
    assert answers["a token: the view's own query (DRF)"].json() == {"token": token}
    assert answers["an order: session authentication (DRF)"].json()["currency"] == "EUR"
    assert answers["a sign-in: Django's LoginView"].url == f"{url}/api/products/"  # signed in, redirected
    settings.SESSION_SAVE_EVERY_REQUEST = True
    assert session.get(f"{url}/api/session/login/").status_code == 200
