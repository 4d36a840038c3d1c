"""Fault tests with real processes: crashes, kills, restarts, outages. Nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import signal
import time

import psutil
import pytest
from django.db import transaction
from django.db.models import Count

from apps.eventbus import headers as h
from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.producing.relay import Relay
from orders_platform.embedded.procs import pid_alive
from tests.bus import stop_process, wait_for
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

pytestmark = pytest.mark.slow


def assert_each_applied_once(count: int, consumer: str = "testing") -> None:
    effects = Effect.objects.filter(consumer=consumer)
    doubles = effects.values("message_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not doubles.exists(), f"applied twice: {list(doubles[:5])}"
    assert effects.count() == count
    assert ProcessedMessage.objects.filter(consumer=consumer).count() == count


def publish_slow_events(bus, count: int) -> None:
    for i in range(count):
        bus.publish_event(SomethingHappened(value=i, mode="slow"))


def finish_with_a_fresh_consumer(bus, total: int) -> None:
    """Start a new consumer process, let it drain the stream, stop it cleanly."""
    process = bus.consumer_process("testing", "--batch", "50")
    try:
        wait_for(lambda: Effect.objects.count() >= total, timeout=90)  # includes ack_wait for a lost batch
        wait_for(lambda: bus.drained("TESTING", "testing"), timeout=30)
    finally:
        assert stop_process(process) == 0
    assert_each_applied_once(total)


def test_a_relay_crash_after_publishing_and_before_marking_sent_publishes_no_duplicate(bus, monkeypatch):
    with transaction.atomic():
        for i in range(50):
            outbox_write(SomethingHappened(value=i))
    real_mark_sent = Relay._mark_sent
    crashes = []

    def crash_once(self, cursor, acked):
        if not crashes:
            crashes.append(len(acked))
            raise RuntimeError("relay killed between publish and commit")
        return real_mark_sent(self, cursor, acked)

    monkeypatch.setattr(Relay, "_mark_sent", crash_once)
    with bus.relay():
        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists())
    assert crashes and crashes[0] > 0, "a relay crashed after publishing (two relay workers may split the 50 rows)"
    assert bus.stream_messages("TESTING") == 50, "the second publish of each event was dropped as a duplicate"
    with bus.consumer("testing"):
        wait_for(lambda: Effect.objects.count() == 50)
    assert_each_applied_once(50)


def test_a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice(bus):
    publish_slow_events(bus, 300)
    process = bus.consumer_process("testing", "--batch", "25")
    try:
        wait_for(lambda: Effect.objects.count() >= 50, timeout=60)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        applied_before_kill = Effect.objects.count()
        assert 50 <= applied_before_kill < 300
    finally:
        stop_process(process, signal.SIGKILL)
    finish_with_a_fresh_consumer(bus, 300)


def test_a_nats_restart_during_relay_and_consumption_loses_nothing(bus, nats_settings):
    with bus.relay(batch_size=50), bus.consumer("testing", batch_size=20):
        for chunk in range(8):
            with transaction.atomic():
                for i in range(50):
                    outbox_write(SomethingHappened(value=chunk * 50 + i, mode="slow"))
            if chunk == 3:
                wait_for(lambda: Effect.objects.count() > 0, timeout=30)
                nats_settings.kill()  # kill -9: no clean shutdown
                time.sleep(1)
                nats_settings.start()
        wait_for(lambda: Effect.objects.count() >= 400, timeout=120)
        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), timeout=30)
    assert bus.stream_messages("TESTING") == 400
    assert_each_applied_once(400)


def test_sigterm_finishes_the_batch_in_hand_acks_and_exits_zero(bus):
    publish_slow_events(bus, 200)
    process = bus.consumer_process("testing", "--batch", "50")
    try:
        wait_for(lambda: Effect.objects.count() > 0, timeout=60)
    finally:
        code = stop_process(process, signal.SIGTERM, timeout=30)
    output = process.stdout.read()
    assert code == 0, output
    assert "consumer testing stopped" in output
    assert "NATS disconnected" not in output and "WARNING" not in output, "a planned close is no warning"
    applied = Effect.objects.count()
    info = bus.consumer_info("TESTING", "testing")
    # Handled messages were acked; a prefetched batch not yet in hand was nak'ed for redelivery.
    assert info.delivered.stream_seq - info.ack_floor.stream_seq == info.num_ack_pending
    assert info.num_pending + info.num_ack_pending == 200 - applied
    assert_each_applied_once(applied)
    finish_with_a_fresh_consumer(bus, 200)


def test_a_consumer_rides_out_a_nats_server_shutdown_and_restart(bus, nats_settings):
    """Issue 11, seen along the way: a fetch while nats-server shuts down answers 503
    (ServiceUnavailableError). The runner waits and goes on; it neither crashes nor goes deaf."""
    process = bus.consumer_process("testing")
    try:
        bus.publish_event(SomethingHappened(value=0))
        wait_for(lambda: Effect.objects.count() == 1, timeout=60)
        for _ in range(3):
            nats_settings.stop()
            time.sleep(0.5)
            nats_settings.start()
        bus.publish_event(SomethingHappened(value=1))
        wait_for(lambda: Effect.objects.count() == 2, timeout=60, message="the runner goes on after the restarts")
        assert process.poll() is None
    finally:
        code = stop_process(process)
    output = process.stdout.read()
    assert code == 0, output
    assert "Traceback" not in output, output
    assert_each_applied_once(2)


def test_the_advisory_dead_letters_a_message_whose_last_delivery_died_with_its_process(bus):
    """max_deliver 2: two processes die on the message; when the next runner pulls, the server
    gives up on it and says so in an advisory, which the ADVISORIES stream keeps until a runner
    of that consumer (any replica) has dead-lettered the message."""
    bus.publish_event(SomethingHappened(value=1, mode="die"))
    for _ in range(2):
        process = bus.consumer_process("testing-advisory")
        assert process.wait(timeout=60) == 137, "the handler killed its process"
    assert bus.stream_messages("DLQ") == 0
    watcher = bus.consumer_process("testing-advisory")
    try:
        wait_for(lambda: bus.stream_messages("DLQ") == 1, timeout=30)
    finally:
        assert stop_process(watcher) == 0
    headers = bus.get("DLQ", 1).headers
    assert headers[h.DL_CONSUMER] == "testing-advisory"
    assert headers[h.DL_ERROR_TYPE] == "MaxDeliveriesExceeded"
    assert headers[h.DL_ATTEMPTS] == "2"
    assert headers[h.DL_SEQUENCE] == "1"
    assert bus.stream_messages("ADVISORIES") == 1
    assert bus.drained("ADVISORIES", "testing-advisory-advisories"), "the advisory was acknowledged"


def test_a_database_outage_holds_the_messages_spends_no_delivery_and_resumes(bus, postgres_server):
    """Issue 11, reproduction 9: the outage is not the messages' fault. The runner keeps them in
    hand (in progress on the server) and handles them once the database answers: no redelivery,
    no dead letter, even when the outage outlasts max_deliver x ack_wait (3 x 3 s here)."""
    process = bus.consumer_process("testing")
    try:
        bus.publish_event(SomethingHappened(value=0))
        wait_for(lambda: Effect.objects.count() == 1, timeout=60)
        postgres_server.stop()
        for i in range(1, 6):
            bus.publish_event(SomethingHappened(value=i))
        time.sleep(12)
        assert process.poll() is None and pid_alive(process.pid), "the runner survives the outage"
        postgres_server.start()
        wait_for(lambda: _count_effects() == 6, timeout=60)
    finally:
        if not postgres_server.is_running():
            postgres_server.start()
        code = stop_process(process)
    assert code == 0
    assert_each_applied_once(6)
    info = bus.consumer_info("TESTING", "testing")
    assert info.num_redelivered == 0 and info.delivered.stream_seq == 6, "no delivery spent on the outage"
    assert bus.stream_messages("DLQ") == 0, "nothing dead-lettered"
    assert psutil.Process().is_running()


def _count_effects() -> int:
    from django.db import connection

    try:
        return Effect.objects.count()
    except Exception:  # noqa: BLE001 - the test's own connection died with the server
        connection.close()
        return -1


def test_a_consumer_whose_nats_client_is_closed_for_good_exits_instead_of_staying_deaf(bus):
    """nats-py closes a client for good after some server errors; the runner then exits (for its
    supervisor to restart it) instead of failing to fetch every half second for ever."""
    from apps.eventbus.consuming.runner import ConnectionLost

    worker = bus.consumer("testing")
    with pytest.raises(ConnectionLost, match="closed for good"), worker:
        runner = worker.worker
        wait_for(lambda: getattr(runner, "nc", None) is not None and runner.nc.is_connected, timeout=10)
        asyncio.run_coroutine_threadsafe(runner.nc.close(), worker.loop).result(10)
        wait_for(lambda: not worker._thread.is_alive(), timeout=15, message="the runner stayed alive, deaf")
