"""A body the API cannot read is its 400 ``parse_error``, DEBUG or not: never a 500, never
Django's HTML debug page, and nothing is written. Request bodies are JSON only."""

from __future__ import annotations

import json
import zlib

import pytest
from rest_framework.test import APIClient

from tests.support import make_user, password_of

from .support import assert_error, written

pytestmark = pytest.mark.django_db

ORDER = {"lines": [{"sku": "KB-001", "quantity": 1}]}


def nested(depth: int, opening: str = "[", closing: str = "]", inner: str = "") -> bytes:
    return (opening * depth + inner + closing * depth).encode()


MALFORMED = [
    # (name, body, Content-Type)
    ("945 nested arrays (the report's token body)", nested(945), "application/json"),
    ("941 nested arrays (the report's order body)", nested(941), "application/json"),
    ("100,000 nested arrays", nested(100_000), "application/json"),
    ("100,000 nested objects", nested(100_000, '{"a":', "}", "1"), "application/json"),
    ("deep arrays inside a real body", b'{"lines": ' + nested(5_000) + b"}", "application/json"),
    ("invalid UTF-8", b'{"username": "\xff\xfe", "password": "x"}', "application/json"),
    ("a lone surrogate in UTF-8 bytes", b'{"username": "\xed\xa0\x80"}', "application/json"),
    ("UTF-16 JSON sent as UTF-8", json.dumps(ORDER).encode("utf-16"), "application/json"),
    ("UTF-8 JSON sent as UTF-16", json.dumps(ORDER).encode(), "application/json; charset=utf-16"),
    ("a UTF-8 byte order mark", b"\xef\xbb\xbf" + json.dumps(ORDER).encode(), "application/json"),
    ("a NUL byte inside a string", b'{"username": "a\x00b", "password": "x"}', "application/json"),
    ("a NUL byte between values", b'{"lines": []\x00}', "application/json"),
    ("truncated", b'{"lines": [', "application/json"),
    ("NaN", b'{"lines": NaN}', "application/json"),
    (
        "an integer of 5,000 digits",
        b'{"lines": [{"sku": "KB-001", "quantity": ' + b"9" * 5000 + b"}]}",
        "application/json",
    ),
    ("random bytes", bytes(range(256)), "application/json"),
    (
        "a charset that is no text encoding: zlib",
        zlib.compress(json.dumps(ORDER).encode()),
        "application/json; charset=zlib",
    ),
    ("a charset that is no text encoding: base64", b"eyJsaW5lcyI6IFtdfQ==", "application/json; charset=base64"),
]


@pytest.fixture(params=[False, True], ids=["DEBUG off", "DEBUG on"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.mark.parametrize(("body", "content_type"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_body_is_a_parse_error_on_every_endpoint(debug, api, catalogue, body, content_type):
    before = written()
    token = APIClient().post("/api/auth/token/", body, content_type=content_type)
    order = api.post("/api/orders/", body, content_type=content_type, HTTP_IDEMPOTENCY_KEY="k-1")
    assert_error(token, 400, "parse_error")
    assert_error(order, 400, "parse_error")
    assert written() == before


def test_escaped_nul_characters_parse_and_are_refused_by_validation(api, catalogue):
    make_user("carol")
    before = written()

    token = APIClient().post("/api/auth/token/", {"username": "carol\x00", "password": password_of("carol")})
    order = api.post("/api/orders/", {"lines": [{"sku": "KB-001\x00", "quantity": 1}]})
    unknown = api.post("/api/orders/", {**ORDER, "\x00": 1})

    assert "null characters" in assert_error(token, 400, "validation_error")["fields"]["username"][0].lower()
    assert "null characters" in assert_error(order, 400, "validation_error")["fields"]["lines.0.sku"][0].lower()
    assert assert_error(unknown, 400, "validation_error")["fields"] == {"\x00": ["Unknown field."]}
    assert written() == before


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"]
)
def test_request_bodies_are_json_only(api, catalogue, content_type):
    make_user("carol")
    before = written()
    form = f"username=carol&password={password_of('carol')}"

    token = APIClient().post("/api/auth/token/", form, content_type=content_type)
    order = api.post("/api/orders/", "lines=KB-001", content_type=content_type)

    assert_error(token, 415, "unsupported_media_type")
    assert_error(order, 415, "unsupported_media_type")
    assert written() == before
