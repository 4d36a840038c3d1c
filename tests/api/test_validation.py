"""Every refused order is a 400 in the one error shape, and writes nothing: no order, no line,
no outbox event, no idempotency record."""

from __future__ import annotations

import pytest

from .support import assert_error, written

pytestmark = pytest.mark.django_db

LINE = {"sku": "KB-001", "quantity": 1}


def order(*lines, **extra):
    return {"lines": list(lines), "currency": "EUR", **extra}


CASES = [
    # (name, body, code, field paths named in the error)
    ("no lines", order(), "validation_error", {"lines"}),
    ("lines missing", {"currency": "EUR"}, "validation_error", {"lines"}),
    ("lines not a list", {"lines": LINE, "currency": "EUR"}, "validation_error", {"lines"}),
    ("a line not an object", order("KB-001"), "validation_error", {"lines.0"}),
    ("quantity zero", order({"sku": "KB-001", "quantity": 0}), "validation_error", {"lines.0.quantity"}),
    ("quantity negative", order({"sku": "KB-001", "quantity": -3}), "validation_error", {"lines.0.quantity"}),
    ("quantity over the limit", order({"sku": "KB-001", "quantity": 1001}), "validation_error", {"lines.0.quantity"}),
    ("quantity as a string", order({"sku": "KB-001", "quantity": "2"}), "validation_error", {"lines.0.quantity"}),
    ("quantity fractional", order({"sku": "KB-001", "quantity": 1.5}), "validation_error", {"lines.0.quantity"}),
    ("quantity a boolean", order({"sku": "KB-001", "quantity": True}), "validation_error", {"lines.0.quantity"}),
    ("quantity missing", order({"sku": "KB-001"}), "validation_error", {"lines.0.quantity"}),
    ("sku a number", order({"sku": 1, "quantity": 1}), "validation_error", {"lines.0.sku"}),
    ("sku too long", order({"sku": "X" * 65, "quantity": 1}), "validation_error", {"lines.0.sku"}),
    ("unknown sku", order(LINE, {"sku": "NOPE-9", "quantity": 1}), "unknown_sku", {"lines.1.sku"}),
    ("duplicate lines", order(LINE, {"sku": "KB-001", "quantity": 2}), "validation_error", {"lines"}),
    ("too many lines", order(*({"sku": f"S-{n}", "quantity": 1} for n in range(51))), "validation_error", {"lines"}),
    ("a client price", order({**LINE, "unit_price": "0.01"}), "validation_error", {"lines.0.unit_price"}),
    ("a client total", order(LINE, total_amount="0.01"), "validation_error", {"total_amount"}),
    ("a client status", order(LINE, status="CONFIRMED"), "validation_error", {"status"}),
    ("a client customer", order(LINE, customer_id="bob"), "validation_error", {"customer_id"}),
    ("an unknown field", order(LINE, coupon="FREE"), "validation_error", {"coupon"}),
    ("another currency", {"lines": [LINE], "currency": "USD"}, "validation_error", {"currency"}),
    ("currency lower case", {"lines": [LINE], "currency": "eur"}, "validation_error", {"currency"}),
    ("currency null", {"lines": [LINE], "currency": None}, "validation_error", {"currency"}),
    ("currency a number", {"lines": [LINE], "currency": 978}, "validation_error", {"currency"}),
    ("a list body", [LINE], "validation_error", {"non_field_errors"}),
    ("a JSON null", b"null", "validation_error", {"non_field_errors"}),
    ("no body", None, "validation_error", {"lines"}),
]


@pytest.mark.parametrize(("body", "code", "paths"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_refused_order_is_a_400_that_writes_nothing(api, catalogue, body, code, paths):
    before = written()

    if isinstance(body, bytes):
        response = api.post("/api/orders/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    else:
        response = api.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    error = assert_error(response, 400, code)
    assert paths <= set(error["fields"]), error
    assert written() == before


def test_several_problems_are_reported_together(api, catalogue):
    response = api.post("/api/orders/", order({"sku": "KB-001", "quantity": 0}, total_amount="1.00"), format="json")
    error = assert_error(response, 400, "validation_error")
    assert set(error["fields"]) == {"lines.0.quantity", "total_amount"}
    assert error["fields"]["total_amount"] == ["Set by the server; clients may not send it."]


def test_another_currency_is_refused_naming_the_platforms(api, catalogue, settings):
    settings.PLATFORM_CURRENCY = "CHF"
    before = written()

    response = api.post("/api/orders/", order(LINE), format="json")  # EUR

    error = assert_error(response, 400, "validation_error")
    assert error["fields"] == {"currency": ["Orders are in CHF, the platform's currency; no other is accepted."]}
    assert written() == before


def test_malformed_json_is_a_400(api, catalogue):
    before = written()
    response = api.post("/api/orders/", '{"lines": [', content_type="application/json")
    assert_error(response, 400, "parse_error")
    assert written() == before


def test_the_limits_come_from_settings(api, catalogue, settings):
    settings.API = {**settings.API, "MAX_ORDER_LINES": 1, "MAX_LINE_QUANTITY": 5}
    before = written()

    too_many = api.post("/api/orders/", order(LINE, {"sku": "MS-002", "quantity": 1}), format="json")
    too_much = api.post("/api/orders/", order({"sku": "KB-001", "quantity": 6}), format="json")

    assert "no more than 1" in assert_error(too_many, 400, "validation_error")["fields"]["lines"][0]
    assert "less than or equal to 5" in assert_error(too_much, 400, "validation_error")["fields"]["lines.0.quantity"][0]
    assert written() == before
    assert api.post("/api/orders/", order({"sku": "KB-001", "quantity": 5}), format="json").status_code == 201


def test_a_cancellation_refuses_unknown_fields_and_keeps_the_order(api, alice, catalogue):
    created = api.post("/api/orders/", order(LINE), format="json").json()
    before = written()

    response = api.post(f"/api/orders/{created['id']}/cancel/", {"status": "CANCELLED"}, format="json")

    assert_error(response, 400, "validation_error")
    assert written() == before
    assert api.get(f"/api/orders/{created['id']}/").json()["status"] == "PENDING"
