"""The OpenAPI schema validates and documents every endpoint's examples and errors; Swagger UI
is served from the project's own static files (it works offline)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ERROR_REF = {"$ref": "#/components/schemas/Error"}


def test_the_schema_validates_with_no_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/orders/" in (tmp_path / "schema.yaml").read_text()


def test_every_operation_has_examples_and_documents_its_errors():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            name = f"{method.upper()} {path}"
            responses = operation["responses"]
            public = {} in operation.get("security", [])
            assert operation.get("summary"), name
            success = [code for code in responses if code.startswith("2")]
            assert len(success) == 1, name
            assert responses[success[0]]["content"]["application/json"].get("examples"), f"{name}: no response example"
            expected_errors = {"429", "503"} | (set() if public else {"401"})
            if method == "post":
                expected_errors |= {"400", "413", "415"}
                if not public:
                    expected_errors.add("422")
                    headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
                    assert "Idempotency-Key" in headers, name
                if "requestBody" in operation:
                    assert set(operation["requestBody"]["content"]) == {"application/json"}, f"{name}: JSON only"
                    assert operation["requestBody"]["content"]["application/json"].get("examples"), name
            errors = {code for code in responses if code[0] in "45"}
            assert expected_errors <= errors, f"{name}: {expected_errors - errors} undocumented"
            for code in errors:
                content = responses[code]["content"]["application/json"]
                assert content["schema"] == ERROR_REF, f"{name} {code}"
                assert content["examples"], f"{name} {code}: no example"
            for code in ("429", "503"):
                assert "Retry-After" in responses[code].get("headers", {}), f"{name} {code}"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_docs_page_loads_only_local_static_files():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"(?:https?:)?//(?!testserver\b)[\w.-]+", html), "a reference to another host"
    links = _Links()
    links.feed(html)
    assert len(links.urls) >= 4  # stylesheet, favicon, two scripts
    for url in links.urls:
        assert url.startswith("/static/"), url
        assert finders.find(url.removeprefix("/static/")), f"{url} is not among the project's static files"
    assert '"validatorUrl": null' in html, "Swagger UI would fetch its validator badge from outside"


def test_an_order_documents_each_of_its_refusals():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    refusals = schema["paths"]["/api/orders/"]["post"]["responses"]["400"]["content"]["application/json"]["examples"]
    codes = [example["value"]["error"]["code"] for example in refusals.values()]
    assert sorted(codes) == ["invalid_idempotency_key", "unknown_sku", "validation_error", "validation_error"]


def test_an_orders_currency_is_optional_and_only_the_platforms():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    order = schema["components"]["schemas"]["OrderCreateRequest"]
    assert order["required"] == ["lines"]
    assert order["properties"]["currency"]["default"] == "EUR"
    currency = order["properties"]["currency"]["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][currency]["enum"] == ["EUR"]
