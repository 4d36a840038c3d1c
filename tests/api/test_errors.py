"""The exception handler: every error becomes the one shape; unexpected ones are logged."""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError
from rest_framework.exceptions import ValidationError

from apps.api.exceptions import api_exception_handler, flatten
from apps.eventbus.deadletters.services import DeadLetterStateError
from apps.eventbus.jetstream.monitoring import NatsUnreachable
from apps.orders.errors import InvalidTransition, UnknownSku


def handled(exc):
    response = api_exception_handler(exc, {"view": None})
    return response.status_code, response.data


def test_nested_validation_errors_become_dotted_paths():
    detail = ValidationError(
        {
            "lines": [{}, {"quantity": ["too big"], "non_field_errors": ["odd line"]}],
            "currency": ["required"],
            "non_field_errors": ["whole body"],
        }
    ).detail
    assert flatten(detail) == {
        "lines.1.quantity": ["too big"],
        "lines.1": ["odd line"],
        "currency": ["required"],
        "non_field_errors": ["whole body"],
    }


def test_domain_errors_keep_their_status_code_and_fields():
    assert handled(UnknownSku("unknown SKU(s): X", fields={"X": "unknown"})) == (
        400,
        {"error": {"code": "unknown_sku", "message": "unknown SKU(s): X", "fields": {"X": ["unknown"]}}},
    )
    assert handled(InvalidTransition("no"))[0] == 409
    assert (
        handled(DeadLetterStateError("dead letter 1 is resolved"))[1]["error"]["code"] == "dead_letter_state_conflict"
    )


def test_an_unexpected_error_is_a_logged_500_in_the_shape(settings, caplog):
    settings.DEBUG = False
    status, body = handled(RuntimeError("boom"))
    assert status == 500
    assert body == {
        "error": {
            "code": "internal_error",
            "message": "An unexpected error occurred; it has been logged.",
            "fields": {},
        }
    }
    assert "boom" not in str(body)
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)


def test_with_debug_on_an_unexpected_error_reaches_djangos_debug_page(settings):
    settings.DEBUG = True
    assert api_exception_handler(RuntimeError("boom"), {"view": None}) is None


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "exc",
    [
        OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
        OperationalError("terminating connection due to administrator command"),
        InterfaceError("connection already closed"),
    ],
)
def test_a_database_that_does_not_answer_is_a_503_to_retry_debug_or_not(settings, exc, debug):
    settings.DEBUG = debug
    response = api_exception_handler(exc, {"view": None})
    assert response.status_code == 503
    assert response.data["error"]["code"] == "service_unavailable"
    assert "5432" not in str(response.data), "the database's address is not the client's business"
    assert response["Retry-After"] == "5"
    settings.API = {**settings.API, "UNAVAILABLE_RETRY_AFTER_SECONDS": 30}
    assert api_exception_handler(exc, {"view": None})["Retry-After"] == "30"


def test_nats_unreachable_is_a_503_to_retry_too():
    response = api_exception_handler(NatsUnreachable("no answer"), {"view": None})
    assert (response.status_code, response.data["error"]["code"], response["Retry-After"]) == (
        503,
        "nats_unavailable",
        "5",
    )
