"""Idempotency-Key: a repeat replays the first response, a different body is refused, and
concurrent requests with one key create one order (the database decides, not memory)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from apps.api.models import IdempotencyKey
from apps.api.services import auth_token_issue
from apps.api.tasks import prune_idempotency_keys
from apps.eventbus.models import OutboxEvent
from apps.orders.models import Order
from orders_platform import celery_app

from .support import assert_error, client_for, written

ORDER = {"lines": [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-002", "quantity": 1}], "currency": "EUR"}


@pytest.mark.django_db
def test_a_repeat_replays_the_first_response_and_creates_nothing(api, catalogue):
    first = api.post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    after_first = written()
    same_body_other_spelling = json.dumps(dict(reversed(ORDER.items())), indent=2)

    repeat = api.post(
        "/api/orders/", same_body_other_spelling, content_type="application/json", HTTP_IDEMPOTENCY_KEY="order-1"
    )

    assert first.status_code == repeat.status_code == 201
    assert repeat.content == first.content
    assert repeat["Idempotent-Replayed"] == "true"
    assert written() == after_first
    assert Order.objects.count() == 1 and OutboxEvent.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422(api, catalogue):
    api.post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    before = written()

    other = {**ORDER, "lines": [{"sku": "KB-001", "quantity": 3}]}
    response = api.post("/api/orders/", other, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

    assert_error(response, 422, "idempotency_key_reused")
    assert written() == before


@pytest.mark.django_db
def test_keys_belong_to_one_user(alice, bob, catalogue):
    for user in (alice, bob):
        assert client_for(user).post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert Order.objects.count() == 2


@pytest.mark.django_db
def test_a_refused_request_does_not_use_up_its_key(api, catalogue):
    refused = api.post("/api/orders/", {**ORDER, "lines": []}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert_error(refused, 400, "validation_error")
    assert not IdempotencyKey.objects.exists()

    assert api.post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201


@pytest.mark.django_db
def test_a_repeated_cancellation_replays_its_success(api, catalogue):
    order_id = api.post("/api/orders/", ORDER, format="json").json()["id"]
    first = api.post(f"/api/orders/{order_id}/cancel/", HTTP_IDEMPOTENCY_KEY="cancel-1")
    repeat = api.post(f"/api/orders/{order_id}/cancel/", HTTP_IDEMPOTENCY_KEY="cancel-1")
    assert first.status_code == repeat.status_code == 200
    assert repeat.content == first.content
    assert_error(api.post(f"/api/orders/{order_id}/cancel/"), 409, "invalid_transition")


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "two words"])
def test_a_malformed_key_is_a_400(api, catalogue, key):
    response = api.post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert_error(response, 400, "invalid_idempotency_key")
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_records_older_than_the_retention_are_pruned(alice, settings):
    settings.API = {**settings.API, "IDEMPOTENCY_KEY_RETENTION_HOURS": 24}
    old = IdempotencyKey.objects.create(user=alice, key="old", fingerprint="f")
    recent = IdempotencyKey.objects.create(user=alice, key="recent", fingerprint="f")
    IdempotencyKey.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))
    IdempotencyKey.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(hours=23))

    assert prune_idempotency_keys() == 1

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]


def test_beat_prunes_the_records_hourly():
    entry = celery_app.conf.beat_schedule["prune-idempotency-keys"]
    assert entry["task"] == prune_idempotency_keys.name == "api.prune_idempotency_keys"
    assert entry["schedule"] == 3600


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_order(live_server, alice, catalogue):
    headers = {"Authorization": f"Token {auth_token_issue(user=alice).key}"}
    threads, start, responses = 8, threading.Barrier(8), []

    def send(key: str) -> None:
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as client:
            start.wait()
            responses.append(client.post("/api/orders/", json=ORDER, headers={"Idempotency-Key": key}))

    for key in ("race-1", "race-2"):
        responses.clear()
        workers = [threading.Thread(target=send, args=(key,)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert [r.status_code for r in responses] == [201] * threads
        assert len({r.content for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == threads - 1

    assert Order.objects.count() == 2
    assert OutboxEvent.objects.filter(subject="orders.created.v1").count() == 2
    assert IdempotencyKey.objects.count() == 2
