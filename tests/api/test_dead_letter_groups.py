"""Dead letters grouped by failure in the API: operators list and read groups, reprocess a group as
a bulk run and discard a group with a reason; auditors only read; customers see none; a malformed
fingerprint is a 400, an unknown one a 404, a group already being reprocessed a 409."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.eventbus.models import DeadLetter, OutboxEvent
from apps.operations.models import BulkReprocess
from tests.factories import make_dead_letter

from .support import assert_error, client_for, resolve

pytestmark = pytest.mark.django_db

GROUPS = "/api/dead-letter-groups/"
UNKNOWN = "0" * 64


@pytest.fixture
def incident() -> list[DeadLetter]:
    """Three dead letters of one cause (an hour ago and since), one of another (just now)."""
    now = timezone.now()
    rows = [
        make_dead_letter(error=f"order {n} refused: {n * 4}.00 over limit", failed_at=now - timedelta(minutes=60 - n))
        for n in range(3)
    ]
    make_dead_letter(error="gateway timed out", failed_at=now)
    return rows


def test_an_operator_lists_the_groups_most_recently_seen_first_and_paged(operator, incident):
    resolve(incident[0])
    api = client_for(operator)

    body = api.get(GROUPS).json()

    assert body["count"] == 2 and body["next"] is None and body["previous"] is None
    timeout, group = body["results"]
    assert timeout["signature"] == "gateway timed out"
    assert group == {
        "fingerprint": incident[0].fingerprint,
        "consumer": "testing",
        "subject": "testing.happened.v1",
        "error_type": "PermanentError",
        "signature": "order <n> refused: <n> over limit",
        "frame": "",  # the factory's traceback names no function
        "count": 2,
        "open": 2,
        "total": 3,
        "by_status": {"pending": 2, "reprocessing": 0, "resolved": 1, "failed_again": 0, "discarded": 0},
        "first_seen": group["first_seen"],
        "last_seen": group["last_seen"],
        "sample_id": incident[2].pk,
    }
    assert group["first_seen"] < group["last_seen"]

    first = api.get(GROUPS, {"page_size": 1}).json()
    assert first["count"] == 2 and "page=2" in first["next"] and "page_size=1" in first["next"]
    second = api.get(first["next"]).json()
    assert [g["signature"] for g in second["results"]] == [group["signature"]]
    assert "page=" not in second["previous"]
    assert_error(api.get(GROUPS, {"page": 3, "page_size": 1}), 404, "not_found")
    assert [g["count"] for g in api.get(GROUPS, {"status": "resolved"}).json()["results"]] == [1]
    assert api.get(GROUPS, {"consumer": "payments"}).json()["results"] == []
    assert_error(api.get(GROUPS, {"status": "closed"}), 400, "validation_error")
    assert_error(api.get(GROUPS, {"page_size": 10_000}), 400, "validation_error")


def test_one_group_with_its_sample_and_the_dead_letters_list_filtered_by_it(operator, incident):
    api = client_for(operator)
    fingerprint = incident[0].fingerprint

    group = api.get(f"{GROUPS}{fingerprint}/").json()

    assert (group["count"], group["total"], group["sample_id"]) == (3, 3, incident[2].pk)
    assert group["sample"]["id"] == incident[2].pk and group["sample"]["error"] == "order 2 refused: 8.00 over limit"
    listed = api.get("/api/dead-letters/", {"fingerprint": fingerprint}).json()["results"]
    assert sorted(row["id"] for row in listed) == sorted(row.pk for row in incident)
    assert_error(api.get("/api/dead-letters/", {"fingerprint": "abc"}), 400, "validation_error")


def test_a_malformed_fingerprint_is_a_400_and_an_unknown_one_a_404(operator, incident):
    api = client_for(operator)
    for bad in ["abc", incident[0].fingerprint.upper(), incident[0].fingerprint + "0", "g" * 64]:
        assert_error(api.get(f"{GROUPS}{bad}/"), 400, "invalid_fingerprint")
        assert_error(api.post(f"{GROUPS}{bad}/reprocess/", {}, format="json"), 400, "invalid_fingerprint")
        assert_error(api.post(f"{GROUPS}{bad}/discard/", {"reason": "x"}, format="json"), 400, "invalid_fingerprint")
    assert_error(api.get(f"{GROUPS}{UNKNOWN}/"), 404, "not_found")
    assert_error(api.post(f"{GROUPS}{UNKNOWN}/reprocess/", {}, format="json"), 404, "not_found")
    assert_error(api.post(f"{GROUPS}{UNKNOWN}/discard/", {"reason": "x"}, format="json"), 404, "not_found")


def test_an_operator_reprocesses_a_group_once_and_a_second_start_is_a_409(operator, incident):
    resolve(incident[0])
    api = client_for(operator)
    url = f"{GROUPS}{incident[0].fingerprint}/reprocess/"

    for bad in [{"rate": "5"}, {"rate": True}, {"rate": 0}, {"rate": 100_000}, {"speed": 5}]:
        assert_error(api.post(url, bad, format="json"), 400, "validation_error")
    response = api.post(url, {"rate": 5}, format="json", HTTP_IDEMPOTENCY_KEY="group-1")

    assert response.status_code == 202, response.content
    [run] = response.json()["runs"]
    created = BulkReprocess.objects.get()
    assert (run["id"], run["consumer"], run["total"], run["rate"]) == (created.pk, "testing", 2, 5.0)
    assert run["status"] == "queued"
    assert run["created_by"] == "olivia" and incident[0].fingerprint in run["description"]
    assert set(created.items.values_list("dead_letter_id", flat=True)) == {incident[1].pk, incident[2].pk}
    replay = api.post(url, {"rate": 5}, format="json", HTTP_IDEMPOTENCY_KEY="group-1")
    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true"

    error = assert_error(api.post(url, {}, format="json"), 409, "bulk_reprocess_active")
    assert "testing" in error["message"]
    assert BulkReprocess.objects.count() == 1


def test_an_operator_discards_a_group_with_a_reason_and_a_closed_group_is_a_409(operator, incident):
    api = client_for(operator)
    fingerprint = incident[0].fingerprint
    url = f"{GROUPS}{fingerprint}/discard/"

    assert_error(api.post(url, {}, format="json"), 400, "validation_error")
    assert_error(api.post(url, {"reason": "   "}, format="json"), 400, "validation_error")
    response = api.post(url, {"reason": "test orders"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["discarded"], body["remaining"], body["group"]["open"], body["group"]["by_status"]["discarded"]) == (
        3, 0, 0, 3
    )  # fmt: skip
    reasons = {json.loads(e.body)["reason"] for e in OutboxEvent.objects.filter(subject__endswith="discarded.v1")}
    assert reasons == {f"test orders (dead-letter group {fingerprint})"}
    assert_error(api.post(url, {"reason": "again"}, format="json"), 409, "dead_letter_group_closed")
    assert_error(api.post(f"{GROUPS}{fingerprint}/reprocess/", {}, format="json"), 409, "dead_letter_group_closed")


def test_auditors_only_read_and_customers_see_nothing(auditor, alice, incident):
    fingerprint = incident[0].fingerprint
    reader = client_for(auditor)
    assert reader.get(GROUPS).status_code == 200
    assert reader.get(f"{GROUPS}{fingerprint}/").status_code == 200
    for action, body in (("reprocess", {}), ("discard", {"reason": "x"})):
        assert_error(reader.post(f"{GROUPS}{fingerprint}/{action}/", body, format="json"), 403, "permission_denied")
    customer = client_for(alice)
    assert_error(customer.get(GROUPS), 403, "permission_denied")
    assert_error(customer.get(f"{GROUPS}{fingerprint}/"), 403, "permission_denied")
    assert_error(client_for().get(GROUPS), 401, "not_authenticated")
    assert not BulkReprocess.objects.exists()
    assert not DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).exists()
