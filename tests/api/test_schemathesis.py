"""Property-based: schemathesis reads /api/schema/ from a live server and sends the requests it
generates from it (valid and invalid ones), with a token; no answer may be a 5xx or stray
from the schema (status codes, content types, headers, bodies). Bounded: a few examples per
operation and mode.

(Through schemathesis's Python API: its pytest fixture loader, ``from_fixture``, does not run
under pytest 9.2, whose nodes no longer have the ``_nodeid`` it rewrites.)
"""

from __future__ import annotations

import io

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
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

from .conftest import record_dead_letter

EXAMPLES_PER_OPERATION = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
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
    dead_letter, _ = record_dead_letter(1), record_dead_letter(2)
    known = {"order_id": str(order.id), "sku": "KB-001", "dead_letter_id": str(dead_letter.id), "name": "testing"}
    return auth_token_issue(user=user).key, known


@pytest.mark.slow
def test_the_api_answers_as_its_schema_says(live_server, seeded):
    token, known = seeded
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 14
    runs = []
    for operation in operations:
        runs += [(operation, GenerationMode.POSITIVE, None), (operation, GenerationMode.NEGATIVE, None)]
        existing = {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}
        if existing:
            runs.append((operation, GenerationMode.POSITIVE, existing))
    failures = []
    for operation, mode, path_parameters in runs:

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case):
            case.call_and_validate(base_url=live_server.url, headers={"Authorization": f"Token {token}"}, checks=CHECKS)

        try:
            answers_as_documented()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label} ({mode.value}, path {path_parameters}):\n{exc}")
    assert not failures, "\n\n".join(failures)
