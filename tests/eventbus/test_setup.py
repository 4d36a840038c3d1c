"""Streams and consumers declared in code; nats_setup creates or updates them idempotently."""

import io
import signal
import time
import urllib.request

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from orders_platform.embedded.procs import free_port
from tests.bus import stop_process, wait_for
from tests.support import http_status
from tests.testapp.events import SomethingHappened


def run_setup() -> list[str]:
    out = io.StringIO()
    call_command("nats_setup", stdout=out)
    return out.getvalue().splitlines()


def test_nats_setup_creates_then_reports_nothing_changed_then_updates(nats_settings, settings):
    first = run_setup()
    assert "stream DLQ: created" in first
    assert "consumer TESTING/testing: created" in first
    assert "consumer DLQ/dead-letters: created" in first
    assert all(line.endswith("unchanged") for line in run_setup())

    settings.EVENTBUS = {**settings.EVENTBUS, "MAX_DELIVER": 9, "DUPLICATE_WINDOW_SECONDS": 900}
    third = run_setup()
    assert "consumer TESTING/testing-other: updated (max_deliver)" in third
    assert "stream TESTING: updated (duplicate_window)" in third


def test_declared_settings_reach_the_server(bus):
    run_setup()
    stream = bus.call(lambda js: js.stream_info("TESTING")).config
    assert sorted(stream.subjects) == ["redeliver.TESTING.>", "testing.>"]
    assert stream.storage == "file" and stream.duplicate_window == 600
    dlq = bus.call(lambda js: js.stream_info("DLQ")).config
    assert dlq.max_age == 365 * 86400
    consumer = bus.consumer_info("TESTING", "testing").config
    assert consumer.max_deliver == 3 and consumer.ack_wait == 3
    assert sorted(consumer.filter_subjects) == [
        "redeliver.TESTING.testing",
        "testing.happened.v1",
        "testing.happened.v2",
        "testing.unversioned.>",
    ]


def test_runconsumer_serves_prometheus_metrics(bus):
    port = free_port()
    bus.publish_event(SomethingHappened(value=1))
    bus.publish_event(SomethingHappened(value=2, mode="permanent"))
    process = bus.consumer_process("testing", "--metrics-port", str(port))
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/metrics") == 200, timeout=60)

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return response.read().decode()

        wait_for(lambda: 'outcome="dead_lettered"' in metrics(), timeout=30)
        text = metrics()
        process.send_signal(signal.SIGUSR1)  # every thread's stack to stderr, and it goes on
        time.sleep(1)
        assert http_status(f"http://127.0.0.1:{port}/metrics") == 200, "still serving after SIGUSR1"
    finally:
        assert stop_process(process) == 0
    output = process.stdout.read()
    assert "Current thread" in output and "most recent call first" in output, output[-2000:]
    assert (
        'nats_messages_consumed_total{consumer="testing",outcome="handled",subject="testing.happened.v1"} 1.0' in text
    )
    assert 'dead_letters_total{consumer="testing"} 1.0' in text
    assert 'order_processing_duration_seconds_count{consumer="testing"}' in text
    assert "nats_consumer_pending_messages" in text


def test_an_unknown_consumer_name_is_a_clear_error(nats_settings):
    with pytest.raises(CommandError, match=r"no consumer named 'nope' is declared .*or 'outbox' for the relay"):
        call_command("runconsumer", "nope")
