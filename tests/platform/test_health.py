"""Liveness and readiness, against the real PostgreSQL and nats-server."""

import json
import os

import pytest

from orders_platform.embedded.procs import free_port
from tests.support import clean_env, manage

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_dependencies(client, settings):
    settings.NATS = {**settings.NATS, "SERVERS": [f"nats://127.0.0.1:{free_port()}"]}
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_ok_when_postgresql_and_jetstream_answer(client, nats_settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["nats"]["ok"] is True


def test_readyz_is_503_with_the_reason_when_nats_is_down(client, nats_settings):
    nats_settings.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["nats"]["ok"] is False
    assert body["checks"]["nats"]["error"]
    assert (
        body["checks"]["nats"]["error"].startswith("NatsUnreachable: ")
        and nats_settings.url.split("//")[1] in (body["checks"]["nats"]["error"])
    ), "the reason names the server"


def test_readyz_is_503_when_jetstream_is_paused(client, nats_settings, settings):
    settings.READINESS_TIMEOUT = 0.5
    nats_settings.pause()
    try:
        response = client.get("/readyz")
    finally:
        nats_settings.resume()
    assert response.status_code == 503
    assert response.json()["checks"]["nats"]["ok"] is False


def test_readyz_is_503_with_the_reason_when_the_database_is_unreachable(nats_server):
    """In a child process whose DATABASE_URL points at a port nothing listens on."""
    env = clean_env(
        DJANGO_SETTINGS_MODULE="orders_platform.settings.test",
        TEST_DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/postgres",
        NATS_URL=nats_server.url,
        DATABASE_CONNECT_TIMEOUT="2",
        PLATFORM_DATA_DIR=os.environ["PLATFORM_DATA_DIR"],
    )
    script = (
        "import json; from django.test import Client; r = Client().get('/readyz'); "
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    result = manage("shell", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 503
    assert outcome["body"]["checks"]["database"]["ok"] is False
    assert "OperationalError" in outcome["body"]["checks"]["database"]["error"]
    assert outcome["body"]["checks"]["nats"]["ok"] is True


def test_prometheus_metrics_are_exposed(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in response.content
