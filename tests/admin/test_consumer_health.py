"""The consumers-and-streams page: live figures from a real nats-server, server-side pause and
resume (recorded in the audit log), who may use them, and a page that survives NATS being down."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace

from django.urls import reverse

from apps.eventbus.jetstream.control import consumer_pause
from apps.eventbus.jetstream.provisioning import ensure_consumer
from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.registry import registry
from tests.bus import wait_for
from tests.factories import make_dead_letter
from tests.testapp.events import SomethingHappened

PAGE = reverse("admin:operations_consumer_changelist")
LIVE = reverse("admin:operations_consumer_live")


def pause_url(name: str) -> str:
    return reverse("admin:operations_consumer_pause", args=[name])


def resume_url(name: str) -> str:
    return reverse("admin:operations_consumer_resume", args=[name])


def test_the_admin_index_links_to_the_page(client, operator, db):
    client.force_login(operator)
    assert PAGE in client.get(reverse("admin:index")).content.decode()


def test_the_page_shows_every_stream_and_consumer_with_live_figures(client, operator, declared):
    for value in range(3):
        declared.publish_event(SomethingHappened(value=value))
    make_dead_letter(consumer="testing")
    make_dead_letter(consumer="testing")
    client.force_login(operator)

    response = client.get(PAGE)

    page = response.content.decode()
    assert response.status_code == 200
    health = response.context["health"]
    streams = {s.name: s for s in health.streams}
    assert {"TESTING", "DLQ", "OPERATOR", "ORDERS", "PAYMENTS", "INVENTORY"} <= set(streams)
    assert streams["TESTING"].messages == 3 and streams["TESTING"].last_seq == 3
    consumers = {row.name: row for row in health.consumers}
    assert consumers["testing"].state.pending == 3, "the three messages wait for the testing consumer"
    assert consumers["testing"].dead_letters_waiting == 2
    assert consumers["testing"].state.paused is False
    assert 'id="consumer-testing"' in page and 'id="stream-TESTING"' in page
    assert 'id="pause-testing"' in page
    assert LIVE in page, "the page refreshes itself from the live fragment"


def test_the_live_fragment_is_the_tables_alone(client, operator, declared):
    client.force_login(operator)

    fragment = client.get(LIVE).content.decode()

    assert 'id="cockpit-consumers"' in fragment and 'id="cockpit-streams"' in fragment
    assert "<html" not in fragment


def test_an_operator_pauses_and_resumes_a_consumer_on_the_server(client, operator, declared):
    client.force_login(operator)

    client.post(pause_url("testing"))

    info = declared.consumer_info("TESTING", "testing")
    assert info.paused is True
    page = client.get(PAGE).content.decode()
    assert 'id="resume-testing"' in page and "paused" in page
    [paused] = [json.loads(row.body) for row in OutboxEvent.objects.filter(subject="operator.consumer_paused.v1")]
    assert paused["consumer"] == "testing" and paused["actor"] == "olivia" and "TESTING" in paused["streams"]

    client.post(resume_url("testing"))

    assert not declared.consumer_info("TESTING", "testing").paused
    [resumed] = [json.loads(row.body) for row in OutboxEvent.objects.filter(subject="operator.consumer_resumed.v1")]
    assert resumed["consumer"] == "testing" and resumed["actor"] == "olivia"


def test_a_paused_consumer_receives_nothing_until_resumed(client, operator, declared):
    client.force_login(operator)
    client.post(pause_url("testing"))
    declared.publish_event(SomethingHappened(value=7))
    with declared.consumer("testing"):
        time.sleep(1.5)
        assert not ProcessedMessage.objects.filter(consumer="testing").exists(), "paused: no deliveries"
        client.post(resume_url("testing"))
        wait_for(lambda: ProcessedMessage.objects.filter(consumer="testing").count() == 1)


def test_an_auditor_sees_the_page_without_buttons_and_cannot_pause(client, auditor, declared):
    client.force_login(auditor)

    page = client.get(PAGE).content.decode()
    assert 'id="consumer-testing"' in page and 'id="pause-testing"' not in page

    assert client.post(pause_url("testing")).status_code == 403
    assert not declared.consumer_info("TESTING", "testing").paused
    assert not OutboxEvent.objects.exists()


def test_pausing_an_undeclared_consumer_says_so(client, operator, declared):
    client.force_login(operator)

    response = client.post(pause_url("no-such-consumer"), follow=True)

    assert any("no consumer named 'no-such-consumer'" in str(m) for m in response.context["messages"])


def test_when_nats_is_unreachable_the_page_says_so(client, operator, settings, db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.NATS = {**settings.NATS, "SERVERS": [f"nats://127.0.0.1:{closed_port}"]}
    settings.READINESS_TIMEOUT = 0.5
    make_dead_letter(consumer="testing")
    client.force_login(operator)

    for url in (PAGE, LIVE):
        response = client.get(url)
        page = response.content.decode()
        assert response.status_code == 200
        assert "NATS is unreachable" in page and f"127.0.0.1:{closed_port}" in page
        assert "testing: 1" in page, "the database's figures still show"

    refused = client.post(pause_url("testing"), follow=True)
    assert any("NATS is unreachable, nothing changed" in str(m) for m in refused.context["messages"])
    assert not OutboxEvent.objects.exists()


def test_a_pause_outlives_a_change_of_the_consumers_configuration(operator, declared):
    """A deploy that changes a consumer's settings (``runconsumer`` updates its durable on start)
    must not silently resume a consumer an operator paused (the server keeps the pause)."""
    consumer_pause(name="testing", actor=operator)
    changed = replace(registry.consumer("testing"), ack_wait=7)

    report = declared.call(lambda js: ensure_consumer(js, changed, "TESTING", ["testing.happened.v1"]))

    assert report.startswith("updated")
    info = declared.consumer_info("TESTING", "testing")
    assert info.config.ack_wait == 7 and info.paused is True
