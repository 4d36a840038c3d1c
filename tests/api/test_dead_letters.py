"""Operators review, reprocess and discard dead letters; auditors only read; customers see none."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.eventbus.models import DeadLetter, OutboxEvent
from tests.factories import make_dead_letter

from .support import assert_error, client_for, resolve

pytestmark = pytest.mark.django_db


def order_dead_letter(sequence: int, *, consumer: str, correlation_id: str, **fields):
    """An ORDERS message that failed its contract: a body of only the order id, the dead letter's
    own Nats-Msg-Id, message id ``m-<sequence>``."""
    fields = {
        "subject": "orders.created.v1",
        "error_type": "ContractError",
        "error": "total_amount: field required",
        "traceback": "",
        **fields,
    }
    return make_dead_letter(
        sequence,
        consumer=consumer,
        correlation_id=correlation_id,
        data=json.dumps({"order_id": correlation_id}),
        stream="ORDERS",
        message_id=f"m-{sequence}",
        headers={"Nats-Msg-Id": f"dlq:{consumer}:ORDERS:{sequence}"},
        **fields,
    )


@pytest.fixture
def dead_letters():
    now = timezone.now()
    return [
        order_dead_letter(1, consumer="payments", correlation_id="order-a", failed_at=now - timedelta(hours=3)),
        order_dead_letter(2, consumer="inventory", correlation_id="order-b", failed_at=now - timedelta(hours=2)),
        order_dead_letter(
            3,
            consumer="inventory",
            subject="orders.cancelled.v1",
            error_type="RetryableError",
            correlation_id="order-c",
        ),
    ]


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_operators_list_and_filter_dead_letters(operator, dead_letters):
    first, second, third = dead_letters
    api = client_for(operator)
    resolve(second)

    assert ids(api.get("/api/dead-letters/")) == [third.id, second.id, first.id]
    assert ids(api.get("/api/dead-letters/", {"consumer": "inventory"})) == [third.id, second.id]
    assert ids(api.get("/api/dead-letters/", {"subject": "orders.cancelled.v1"})) == [third.id]
    assert ids(api.get("/api/dead-letters/", {"error_type": "RetryableError"})) == [third.id]
    assert ids(api.get("/api/dead-letters/", {"status": "resolved"})) == [second.id]
    hour_ago = (timezone.now() - timedelta(hours=1)).isoformat()
    assert ids(api.get("/api/dead-letters/", {"failed_after": hour_ago})) == [third.id]
    assert ids(api.get("/api/dead-letters/", {"failed_before": hour_ago})) == [second.id, first.id]
    assert ids(api.get("/api/dead-letters/", {"search": "order-a"})) == [first.id]
    assert ids(api.get("/api/dead-letters/", {"search": "m-2"})) == [second.id]
    assert_error(api.get("/api/dead-letters/", {"status": "lost"}), 400, "validation_error")


def test_a_dead_letter_shows_its_message_and_history(operator, dead_letters):
    body = client_for(operator).get(f"/api/dead-letters/{dead_letters[0].id}/").json()
    assert body["data"] == '{"order_id": "order-a"}'
    assert body["headers"] == {"Nats-Msg-Id": "dlq:payments:ORDERS:1"}
    assert body["history"] == [
        {"kind": "failed", "actor": None, "note": "total_amount: field required", "at": body["history"][0]["at"]}
    ]
    assert_error(client_for(operator).get("/api/dead-letters/999999/"), 404, "not_found")
    assert_error(client_for(operator).get("/api/dead-letters/abc/"), 404, "not_found")


def test_auditors_read_but_may_not_act(auditor, dead_letters):
    api = client_for(auditor)
    dead_letter = dead_letters[0]
    assert api.get("/api/dead-letters/").status_code == 200
    assert api.get(f"/api/dead-letters/{dead_letter.id}/").status_code == 200

    assert_error(api.post(f"/api/dead-letters/{dead_letter.id}/reprocess/"), 403, "permission_denied")
    discard = api.post(f"/api/dead-letters/{dead_letter.id}/discard/", {"reason": "noise"}, format="json")
    assert_error(discard, 403, "permission_denied")
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING
    assert not OutboxEvent.objects.exists()


def test_customers_see_no_dead_letters(alice, dead_letters):
    assert_error(client_for(alice).get("/api/dead-letters/"), 403, "permission_denied")
    assert_error(client_for(alice).get(f"/api/dead-letters/{dead_letters[0].id}/"), 403, "permission_denied")


def test_an_operator_reprocesses_a_dead_letter_to_its_consumer(operator, dead_letters):
    dead_letter = dead_letters[0]

    response = client_for(operator).post(f"/api/dead-letters/{dead_letter.id}/reprocess/")

    assert response.status_code == 202
    assert response.json()["status"] == "reprocessing"
    assert [(e["kind"], e["actor"]) for e in response.json()["history"]] == [
        ("failed", None),
        ("reprocess_requested", "olivia"),
    ]
    redelivery = OutboxEvent.objects.get(subject__startswith="redeliver.")
    assert redelivery.subject == "redeliver.ORDERS.payments"
    assert redelivery.body == dead_letter.data
    audit = OutboxEvent.objects.get(subject="operator.dead_letter_reprocess_requested.v1")
    assert '"actor":"olivia"' in audit.body.replace(" ", ""), "the audit log learns who did it"


@pytest.mark.parametrize("state", ["resolved", "discarded"])
def test_reprocessing_a_closed_dead_letter_is_a_409(operator, dead_letters, state):
    api = client_for(operator)
    dead_letter = dead_letters[0]
    if state == "resolved":
        resolve(dead_letter)
    else:
        api.post(f"/api/dead-letters/{dead_letter.id}/discard/", {"reason": "noise"}, format="json")
    before = OutboxEvent.objects.count()

    response = api.post(f"/api/dead-letters/{dead_letter.id}/reprocess/")

    assert_error(response, 409, "dead_letter_state_conflict")
    assert OutboxEvent.objects.count() == before, "nothing redelivered, nothing recorded"


def test_discarding_needs_a_reason_and_is_recorded(operator, dead_letters):
    api = client_for(operator)
    dead_letter = dead_letters[0]
    url = f"/api/dead-letters/{dead_letter.id}/discard/"

    missing = assert_error(api.post(url, {}, format="json"), 400, "validation_error")
    blank = assert_error(api.post(url, {"reason": "   "}, format="json"), 400, "validation_error")
    assert set(missing["fields"]) == set(blank["fields"]) == {"reason"}

    response = api.post(url, {"reason": "a test message"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "discarded"
    assert response.json()["history"][-1] == {
        "kind": "discarded", "actor": "olivia", "note": "a test message", "at": response.json()["history"][-1]["at"],
    }  # fmt: skip


def test_discarding_a_resolved_dead_letter_is_a_409(operator, dead_letters):
    dead_letter = resolve(dead_letters[0])
    response = client_for(operator).post(f"/api/dead-letters/{dead_letter.id}/discard/", {"reason": "x"}, format="json")
    assert_error(response, 409, "dead_letter_state_conflict")
