"""The metrics port of real ``runconsumer`` and ``runrelay`` processes against a real nats-server:
the pending gauge with messages waiting, /healthz going 503 while the server is frozen
(SIGSTOP: alive but deaf) and 200 again after, the outbox and stream gauges the relay sets."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from django.db import transaction

from apps.eventbus.producing.outbox import outbox_write
from orders_platform.embedded.procs import free_port, wait_until
from tests.bus import stop_process, wait_for
from tests.observability.promql import sample_of
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

STALE = "10"  # EVENTBUS_HEALTH_STALE_SECONDS for these processes (the least the settings allow)


def stopped(process) -> None:
    """Stop a child started by the bus helpers; its output shows when it did not end cleanly."""
    code = stop_process(process)
    output = process.stdout.read() if process.stdout else ""
    assert code == 0, f"exit code {code}:\n{output[-5000:]}"


def get(port: int, path: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return None, ""


def sample(port: int, name: str, **labels: str) -> float | None:
    """One sample of the process's /metrics, or None (not there, or no answer)."""
    status, text = get(port, "/metrics")
    return sample_of(text, name, **labels) if status == 200 else None


def eventually(read, predicate, timeout: float):
    """Poll ``read()`` until ``predicate`` holds for its value; the value, or a failure showing the last one."""
    seen = []

    def check():
        seen.append(read())
        return predicate(seen[-1])

    assert wait_until(check, timeout=timeout, interval=0.2), f"still {seen[-1]!r} after {timeout}s"
    return seen[-1]


def health(port: int) -> tuple[int | None, dict]:
    status, text = get(port, "/healthz")
    return status, (json.loads(text) if text.startswith("{") else {})


def test_the_pending_gauge_counts_messages_published_while_the_consumer_is_paused(declared):
    bus = declared
    until = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    bus.call(lambda js: js.pause_consumer("TESTING", "testing", until))
    for value in range(7):
        bus.publish_event(SomethingHappened(value=value))
    port = free_port()
    process = bus.consumer_process("testing", "--metrics-port", str(port))
    try:
        pending = lambda: sample(port, "nats_consumer_pending_messages", consumer="testing")  # noqa: E731
        eventually(pending, lambda value: value == 7, timeout=60)
        assert Effect.objects.filter(consumer="testing").count() == 0, "paused: nothing handled"

        bus.call(lambda js: js.resume_consumer("TESTING", "testing"))
        wait_for(lambda: Effect.objects.filter(consumer="testing").count() == 7, timeout=30)
        eventually(pending, lambda value: value == 0, timeout=30)
        assert sample(port, "nats_messages_consumed_total", consumer="testing", outcome="handled",
                      subject="testing.happened.v1") == 7  # fmt: skip
    finally:
        stopped(process)


def test_healthz_is_503_while_nats_is_frozen_and_200_before_and_after(declared):
    bus = declared
    port = free_port()
    process = bus.consumer_process("testing", "--metrics-port", str(port), env={"EVENTBUS_HEALTH_STALE_SECONDS": STALE})
    try:
        wait_for(lambda: health(port)[0] == 200, timeout=60)
        _, body = health(port)
        assert (body["service"], body["status"], body["stale_after_seconds"]) == ("testing", "ok", float(STALE))
        assert sample(port, "eventbus_consumer_last_fetch_timestamp_seconds", consumer="testing") > 0

        bus.server.pause()  # SIGSTOP: the connection stays open, nothing answers
        try:
            _, body = eventually(lambda: health(port), lambda answer: answer[0] == 503, timeout=40)
            assert body["status"] == "deaf" and body["last_answer_seconds_ago"] > float(STALE)
        finally:
            bus.server.resume()
        eventually(lambda: health(port), lambda answer: answer[0] == 200, timeout=30)

        bus.publish_event(SomethingHappened(value=1))  # and it still works
        wait_for(lambda: Effect.objects.filter(consumer="testing").count() == 1, timeout=30)
    finally:
        stopped(process)


def test_the_relay_sets_the_outbox_and_stream_gauges_and_is_503_while_nats_is_frozen(bus):
    port = free_port()
    process = bus.relay_process("--metrics-port", str(port), env={"EVENTBUS_HEALTH_STALE_SECONDS": STALE})
    try:
        wait_for(lambda: health(port)[0] == 200, timeout=60)
        wait_for(lambda: sample(port, "nats_stream_messages", stream="TESTING") == 0, timeout=30)
        assert sample(port, "eventbus_outbox_backlog") == 0
        assert sample(port, "eventbus_relay_last_round_timestamp_seconds") > 0

        bus.server.pause()
        try:
            with transaction.atomic():
                for value in range(3):
                    outbox_write(SomethingHappened(value=value))
            backlog = lambda: sample(port, "eventbus_outbox_backlog")  # noqa: E731
            eventually(backlog, lambda value: value == 3, timeout=30)
            wait_for(lambda: sample(port, "eventbus_outbox_oldest_unsent_age_seconds") > 1, timeout=30)
            _, body = eventually(lambda: health(port), lambda answer: answer[0] == 503, timeout=40)
            assert body["status"] in ("deaf", "stuck")
        finally:
            bus.server.resume()

        wait_for(lambda: bus.stream_messages("TESTING") == 3, timeout=30)
        wait_for(lambda: sample(port, "eventbus_outbox_backlog") == 0, timeout=30)
        assert sample(port, "eventbus_outbox_oldest_unsent_age_seconds") == 0
        wait_for(lambda: sample(port, "nats_stream_messages", stream="TESTING") == 3, timeout=30)
        eventually(lambda: health(port), lambda answer: answer[0] == 200, timeout=30)
        assert sample(port, "nats_messages_published_total", subject="testing.happened.v1") == 3
        assert re.search(r'^nats_stream_bytes\{stream="TESTING"\} [1-9]', get(port, "/metrics")[1], re.M)
    finally:
        stopped(process)
