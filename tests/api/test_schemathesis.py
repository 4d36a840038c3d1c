"""Property-based: schemathesis reads /api/schema/ from a live server and sends the requests it
generates from it, with a token: valid ones, ones that break the schema (negative mode), and,
to every POST, malformed bodies (bytes that are no JSON, nesting far deeper than Python's
recursion limit, a valid body cut short or broken by invalid UTF-8 or a NUL, under JSON and
other media types). No answer may be a 5xx or stray from the schema (status codes, content
types, headers, bodies). Bounded: a few examples per operation and mode.

(Through schemathesis's Python API: its pytest fixture loader, ``from_fixture``, does not run
under pytest 9.2, whose nodes no longer have the ``_nodeid`` it rewrites.)
"""

from __future__ import annotations

import io
import json

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.api.services import auth_token_issue
from apps.inventory.catalogue import DEMO_PRODUCTS
from apps.inventory.services import product_ensure
from apps.orders.services import order_place
from tests.factories import make_dead_letter

EXAMPLES_PER_OPERATION = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MALFORMED = "malformed"  # a mode of this test's own: POST bodies the API cannot parse
# Inserted into a valid body: not UTF-8 (a lone byte, a UTF-8-encoded surrogate), NUL, a BOM, stray JSON.
BREAKERS = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"[", b"}", b'"', b"NaN", b"1e999999"]
JSON = "application/json"
OTHER_MEDIA_TYPES = [
    "application/json; charset=utf-16",
    "application/json; charset=zlib",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=x",
]


@pytest.fixture
def seeded(bus) -> tuple[str, dict[str, str]]:
    """A superuser's token (every endpoint answers it), and ids that exist: a catalogue, an order,
    dead letters and a real nats-server with every consumer, so that generated requests reach
    past the 404s and 503s."""
    call_command("nats_setup", stdout=io.StringIO())
    for sku, name, price, stock in DEMO_PRODUCTS:
        product_ensure(sku=sku, name=name, price=price, stock_on_hand=stock)
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    order = order_place(customer_id=str(user.pk), lines=[("KB-001", 1)])
    dead_letter, _ = make_dead_letter(), make_dead_letter()
    known = {
        "order_id": str(order.id),
        "sku": "KB-001",
        "dead_letter_id": str(dead_letter.id),
        "name": "testing",
        "fingerprint": dead_letter.fingerprint,
    }
    return auth_token_issue(user=user).key, known


def deep(opening: bytes, closing: bytes, inner: bytes = b"") -> st.SearchStrategy[bytes]:
    return st.integers(min_value=1_000, max_value=100_000).map(lambda depth: opening * depth + inner + closing * depth)


def malformed(valid: bytes) -> st.SearchStrategy[bytes]:
    """Bodies no client should send, some made from ``valid`` (a body the schema allows)."""
    at = st.integers(min_value=0, max_value=max(len(valid) - 1, 0))
    return st.one_of(
        st.binary(max_size=512),
        deep(b"[", b"]"),
        deep(b'{"a":', b"}", b"1"),
        st.builds(lambda i, breaker: valid[:i] + breaker + valid[i:], at, st.sampled_from(BREAKERS)),
        at.map(lambda i: valid[:i]),
    )


@pytest.mark.slow
def test_the_api_answers_as_its_schema_says(live_server, seeded):
    token, known = seeded
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 18
    runs = []
    for operation in operations:
        runs += [(operation, GenerationMode.POSITIVE, None), (operation, GenerationMode.NEGATIVE, None)]
        existing = {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}
        if existing:
            runs.append((operation, GenerationMode.POSITIVE, existing))
        if operation.method.upper() == "POST":  # with ids that exist, so that the body is read
            runs.append((operation, MALFORMED, existing or None))
    failures = []
    for operation, mode, path_parameters in runs:
        try:
            check(operation, mode, path_parameters, base_url=live_server.url, token=token)
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label} ({getattr(mode, 'value', mode)}, path {path_parameters}):\n{exc}")
    assert not failures, "\n\n".join(failures)


def check(operation, mode: GenerationMode | str, path_parameters: dict | None, *, base_url: str, token: str) -> None:
    """Send ``EXAMPLES_PER_OPERATION`` requests of ``mode`` (twice as many malformed ones) to
    ``operation``; raise what failed."""
    generation_mode = GenerationMode.POSITIVE if mode == MALFORMED else mode

    @given(case=operation.as_strategy(generation_mode=generation_mode, path_parameters=path_parameters), data=st.data())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION * (2 if mode == MALFORMED else 1),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case, data):
        if mode == MALFORMED:
            valid = b"{}" if case.body is NOT_SET else json.dumps(case.body).encode()
            case.body, case.media_type = data.draw(malformed(valid), label="body"), JSON
            media_type = st.one_of(st.just(JSON), st.sampled_from(OTHER_MEDIA_TYPES))  # JSON in half of them
            case.headers["Content-Type"] = data.draw(media_type, label="Content-Type")
        case.call_and_validate(base_url=base_url, headers={"Authorization": f"Token {token}"}, checks=CHECKS)

    answers_as_documented()
