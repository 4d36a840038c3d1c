"""Every endpoint needs authentication, except getting a token and reading the schema/docs."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.support import make_user

from .support import assert_error, client_for

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
PUBLIC = {"/api/auth/token/", "/api/schema/", "/api/docs/"}
PLACEHOLDERS = {
    "{order_id}": "6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b",
    "{sku}": "KB-001",
    "{dead_letter_id}": "1",
    "{name}": "payments",
    "{fingerprint}": "0" * 64,
}


def operations() -> list[tuple[str, str, list]]:
    """(method, path, security) of every documented operation."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for placeholder, value in PLACEHOLDERS.items():
                path = path.replace(placeholder, value)
            found.append((method, path, operation.get("security", [])))
    return found


def test_the_api_documents_the_endpoints_it_has():
    paths = {path for _, path, _ in operations()}
    assert {
        "/api/orders/", "/api/orders/6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b/",
        "/api/orders/6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b/cancel/", "/api/products/", "/api/products/KB-001/",
        "/api/dead-letters/", "/api/dead-letters/1/", "/api/dead-letters/1/reprocess/", "/api/dead-letters/1/discard/",
        "/api/consumers/", "/api/consumers/payments/pause/", "/api/consumers/payments/resume/", "/api/auth/token/",
        "/api/dead-letter-groups/", f"/api/dead-letter-groups/{'0' * 64}/",
        f"/api/dead-letter-groups/{'0' * 64}/reprocess/", f"/api/dead-letter-groups/{'0' * 64}/discard/",
    } == paths  # fmt: skip


def test_every_endpoint_but_the_token_one_refuses_anonymous_requests_with_401():
    anonymous = APIClient()
    for method, path, security in operations():
        if path in PUBLIC:
            assert {} in security, path
            continue
        assert {} not in security, f"{method} {path} is documented as public"
        response = getattr(anonymous, method)(path, {}, format="json")
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token"


def test_a_bad_token_is_a_401():
    response = APIClient().get("/api/orders/", HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert_error(response, 401, "authentication_failed")


def test_the_schema_and_the_docs_are_public():
    assert APIClient().get("/api/schema/").status_code == 200
    assert APIClient().get("/api/docs/").status_code == 200


def test_a_token_for_a_username_and_password_opens_the_api():
    make_user("carol")
    response = APIClient().post("/api/auth/token/", {"username": "carol", "password": "pw-carol"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]

    again = APIClient().post("/api/auth/token/", {"username": "carol", "password": "pw-carol"}, format="json")
    assert again.json()["token"] == token
    form = APIClient().post("/api/auth/token/", "username=carol&password=pw-carol", content_type=FORM)
    assert_error(form, 415, "unsupported_media_type")
    assert APIClient().get("/api/orders/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "carol", "password": "wrong"}, "invalid_credentials"),
        ({"username": "nobody", "password": "pw-carol"}, "invalid_credentials"),
        ({"username": "dormant", "password": "pw-dormant"}, "invalid_credentials"),
        ({"username": "carol"}, "validation_error"),
        ({"username": "carol", "password": "pw-carol", "is_staff": True}, "validation_error"),
    ],
)
def test_no_token_without_valid_credentials(body, code):
    make_user("carol")
    make_user("dormant", is_active=False)
    assert_error(APIClient().post("/api/auth/token/", body, format="json"), 400, code)


def test_a_session_serves_the_browsable_api(catalogue):
    client = APIClient()
    assert client.get("/api/session/login/").status_code == 200
    client.force_login(make_user("root", is_superuser=True))
    for url in ("/api/orders/", "/api/products/", "/api/products/KB-001/", "/api/dead-letters/"):
        response = client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith("text/html")


def test_other_paths_methods_and_media_types_answer_in_the_error_shape(alice):
    api = client_for(alice)
    assert_error(api.get("/api/nothing-here/"), 404, "not_found")
    assert_error(api.get("/api/orders"), 404, "not_found")
    assert_error(api.get("/api/orders/not-a-uuid/"), 404, "not_found")
    assert_error(api.get("/api/dead-letters/99999999999999999999999/"), 403, "permission_denied")
    refused = api.delete("/api/orders/")
    assert_error(refused, 405, "method_not_allowed")
    assert "POST" in refused["Allow"]
    assert_error(api.post("/api/orders/", "lines=1", content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(api.get("/api/orders/", HTTP_ACCEPT="application/xml"), 406, "not_acceptable")
