"""The payment gateway simulator as a real process: idempotency, declines, throttling, outage,
refunds, and a ledger that survives kill -9."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gateway import Gateway


@pytest.fixture
def gateway(tmp_path):
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    yield gateway
    if gateway.process.poll() is None:
        assert gateway.stop() == 0


def test_a_repeated_key_returns_the_first_result_and_charges_once(gateway):
    first = gateway.charge("order-1")
    again = gateway.charge("order-1", amount="12.3")  # the same amount, spelled differently
    assert first[0] == again[0] == 201
    assert first[1]["status"] == "succeeded" and first[1] == again[1]
    _, listing, _ = gateway.call("GET", "/v1/charges?reference=order-1")
    assert [charge["id"] for charge in listing["data"]] == [first[1]["id"]]


def test_the_same_key_with_a_different_amount_is_refused(gateway):
    gateway.charge("order-1", amount="10.00")
    status, body, _ = gateway.charge("order-1", amount="10.01")
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused"


def test_concurrent_requests_with_one_key_create_one_charge(gateway):
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: gateway.charge("order-race"), range(32)))
    assert {status for status, _, _ in results} == {201}
    assert len({body["id"] for _, body, _ in results}) == 1
    assert len(gateway.call("GET", "/v1/charges?reference=order-1")[1]["data"]) == 1


def test_declines_are_recorded_and_repeated_for_their_key(gateway):
    gateway.control(decline_rate=1.0)
    status, body, _ = gateway.charge("order-2", reference="order-2")
    assert status == 402 and body["status"] == "declined" and body["decline_code"] == "card_declined"
    gateway.control(decline_rate=0.0)
    assert gateway.charge("order-2", reference="order-2")[1] == body, "a key keeps its first answer"


def test_throttling_and_outage_are_switched_at_run_time_and_charge_nothing(gateway):
    gateway.control(throttle_rate=1.0, retry_after=7)
    status, body, headers = gateway.charge("order-3")
    assert status == 429 and body["error"]["code"] == "rate_limited" and headers["Retry-After"] == "7"
    gateway.control(throttle_rate=0.0, outage=True)
    status, body, _ = gateway.charge("order-3")
    assert status == 503 and body["error"]["code"] == "outage"
    assert gateway.call("GET", "/v1/charges")[1]["data"] == []
    gateway.control(outage=False)
    assert gateway.charge("order-3")[0] == 201


def test_latency_is_configurable(gateway):
    gateway.control(latency_ms=300)
    started = time.monotonic()
    gateway.charge("order-4")
    assert time.monotonic() - started >= 0.3


def test_refunds_are_idempotent_and_bounded_by_the_charge(gateway):
    _, charge, _ = gateway.charge("order-5", amount="20.00")
    first = gateway.call("POST", "/v1/refunds", {"charge": charge["id"], "amount": "20.00"}, key="refund-5")
    again = gateway.call("POST", "/v1/refunds", {"charge": charge["id"], "amount": "20.00"}, key="refund-5")
    assert first[0] == again[0] == 201 and first[1] == again[1]
    status, body, _ = gateway.call("POST", "/v1/refunds", {"charge": charge["id"], "amount": "0.01"}, key="refund-x")
    assert status == 422 and body["error"]["code"] == "amount_too_large"
    assert gateway.call("GET", f"/v1/charges/{charge['id']}")[1]["amount_refunded"] == "20.00"


def test_the_ledger_and_its_keys_survive_kill_minus_9(gateway):
    _, charge, _ = gateway.charge("order-6")
    assert gateway.stop(signal.SIGKILL) == -9
    gateway.start()
    assert gateway.charge("order-6")[1]["id"] == charge["id"]
    assert len(gateway.call("GET", "/v1/charges")[1]["data"]) == 1


@pytest.mark.parametrize(
    ("body", "key", "code"),
    [
        ({"amount": "12.30", "currency": "EUR"}, None, "idempotency_key_required"),
        ({"amount": "-1", "currency": "EUR"}, "k", "invalid_amount"),
        ({"amount": "1.234", "currency": "EUR"}, "k", "invalid_amount"),
        ({"amount": 12.3, "currency": "EURO"}, "k", "invalid_currency"),
    ],
)
def test_bad_requests_get_400_with_a_stable_code(gateway, body, key, code):
    status, response, _ = gateway.call("POST", "/v1/charges", body, key)
    assert status == 400 and response["error"]["code"] == code
