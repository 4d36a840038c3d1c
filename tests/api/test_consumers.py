"""Consumers and streams through the API, against a real nats-server: the live figures, pause
and resume on the server (recorded in the audit log), who may do it, and NATS being down."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

from django.utils import timezone

from apps.eventbus.models import OutboxEvent
from tests.factories import make_dead_letter
from tests.testapp.events import SomethingHappened

from .support import assert_error, client_for


def test_operators_and_auditors_read_the_live_figures(operator, auditor, declared):
    for value in range(4):
        declared.publish_event(SomethingHappened(value=value))
    make_dead_letter(consumer="testing")

    for user in (operator, auditor):
        response = client_for(user).get("/api/consumers/")
        assert response.status_code == 200
        body = response.json()
        consumers = {c["name"]: c for c in body["consumers"]}
        streams = {s["name"]: s for s in body["streams"]}
        assert consumers["testing"]["pending"] == 4 and consumers["testing"]["backlog"] == 4
        assert consumers["testing"]["streams"] == ["TESTING"] and consumers["testing"]["paused"] is False
        assert consumers["testing"]["dead_letters_waiting"] == 1
        assert streams["TESTING"]["messages"] == 4 and streams["TESTING"]["last_seq"] == 4


def test_customers_get_403(alice, declared):
    assert_error(client_for(alice).get("/api/consumers/"), 403, "permission_denied")
    assert_error(client_for().get("/api/consumers/"), 401, "not_authenticated")


def test_an_operator_pauses_until_a_time_then_resumes(operator, declared):
    api = client_for(operator)
    until = timezone.now() + timedelta(hours=1)

    paused = api.post("/api/consumers/testing/pause/", {"until": until.isoformat()}, format="json")

    assert paused.status_code == 200, paused.content
    assert paused.json()["paused"] is True
    info = declared.consumer_info("TESTING", "testing")
    assert info.paused is True
    event = json.loads(OutboxEvent.objects.get(subject="operator.consumer_paused.v1").body)
    assert event["actor"] == "olivia" and event["until"].startswith(until.strftime("%Y-%m-%dT%H:%M"))

    resumed = api.post("/api/consumers/testing/resume/")

    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert not declared.consumer_info("TESTING", "testing").paused
    assert OutboxEvent.objects.filter(subject="operator.consumer_resumed.v1").count() == 1


def test_pause_refuses_a_time_in_the_past_and_unknown_fields(operator, declared):
    api = client_for(operator)
    past = (timezone.now() - timedelta(minutes=1)).isoformat()

    response = api.post("/api/consumers/testing/pause/", {"until": past}, format="json")
    error = assert_error(response, 400, "validation_error")
    assert "until" in error["fields"]
    assert_error(api.post("/api/consumers/testing/pause/", {"for": 10}, format="json"), 400, "validation_error")
    assert not declared.consumer_info("TESTING", "testing").paused


def test_an_auditor_cannot_pause_and_an_unknown_consumer_is_404(operator, auditor, declared):
    assert_error(client_for(auditor).post("/api/consumers/testing/pause/"), 403, "permission_denied")
    assert not declared.consumer_info("TESTING", "testing").paused
    assert_error(client_for(operator).post("/api/consumers/nope/pause/"), 404, "not_found")
    assert not OutboxEvent.objects.exists()


def test_nats_down_is_a_503_and_changes_nothing(operator, settings, db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings.NATS = {**settings.NATS, "SERVERS": [f"nats://127.0.0.1:{closed}"]}
    settings.READINESS_TIMEOUT = 0.5
    api = client_for(operator)

    assert_error(api.get("/api/consumers/"), 503, "nats_unavailable")
    assert_error(api.post("/api/consumers/testing/pause/"), 503, "nats_unavailable")
    assert not OutboxEvent.objects.exists()
