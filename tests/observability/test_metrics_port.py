"""The pieces behind the metrics port, without NATS: the liveness behind /healthz, the WSGI app,
the gauges set by the payment gateway's circuit breaker and by the orders consumer's poll, and
the ports ``make run`` hands out."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from apps.eventbus.errors import DependencyDown, RetryableError
from apps.eventbus.management.process import metrics_app, serve_metrics
from apps.eventbus.metrics import Liveness
from apps.payments import gateway
from orders_platform.embedded.procs import free_port
from orders_platform.processes import CONSUMERS, SERVES_METRICS, metrics_ports, metrics_urls, platform_programs
from tests.support import http_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- Liveness -----------------------------------------------------------------------------------


def test_liveness_is_stuck_without_progress_deaf_without_answers_and_fine_while_waiting():
    clock = Clock()
    liveness = Liveness(clock=clock)
    healthy, body = liveness.check(10)
    assert (healthy, body["status"], body["stale_after_seconds"]) == (True, "ok", 10)

    clock.now += 11  # the loop stopped turning
    healthy, body = liveness.check(10)
    assert (healthy, body["status"], body["last_progress_seconds_ago"]) == (False, "stuck", 11)

    liveness.progressed()  # the loop turns, the server stays silent: deaf
    healthy, body = liveness.check(10)
    assert (healthy, body["status"], body["last_answer_seconds_ago"]) == (False, "deaf", 11)

    with liveness.holding("database"):  # on purpose: a restart would not help
        healthy, body = liveness.check(10)
        assert (healthy, body["status"], body["waiting_for"]) == (True, "waiting", "database")
    assert liveness.check(10)[0] is False

    liveness.answered()
    healthy, body = liveness.check(10)
    assert (healthy, body["status"]) == (True, "ok")


def test_liveness_sets_its_timestamp_gauge_at_start_and_at_each_progress():
    registry = CollectorRegistry()
    gauge = Gauge("t_last", "t", registry=registry)
    liveness = Liveness(gauge)
    assert registry.get_sample_value("t_last") > 1_700_000_000  # a Unix time: the start until the first round
    gauge.set(0)
    liveness.answered()
    assert registry.get_sample_value("t_last") == 0, "an answer is no progress of the loop"
    liveness.progressed()
    assert registry.get_sample_value("t_last") > 1_700_000_000


# -- the WSGI app of the metrics port -------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_metrics_port_serves_metrics_healthz_and_nothing_else(settings):
    settings.EVENTBUS = {**settings.EVENTBUS, "HEALTH_STALE_SECONDS": 10}
    clock = Clock()
    liveness = Liveness(clock=clock)
    counter = Counter("observability_test_things", "things", registry=REGISTRY)
    counter.inc(3)
    port = free_port()
    server = serve_metrics(port, service="inventory", liveness=liveness, address="127.0.0.1")
    try:
        status, text = _get(port, "/metrics")
        assert status == 200 and "observability_test_things_total 3.0" in text

        status, text = _get(port, "/healthz")
        body = json.loads(text)
        assert status == 200 and (body["service"], body["status"], body["stale_after_seconds"]) == (
            "inventory",
            "ok",
            10.0,
        )

        clock.now += 30
        status, text = _get(port, "/healthz")
        assert status == 503 and json.loads(text)["status"] == "stuck"
        assert http_status(f"http://127.0.0.1:{port}/admin/") == 404
    finally:
        server.shutdown()
        server.server_close()
        REGISTRY.unregister(counter)


def test_a_worker_without_liveness_is_healthy_while_it_runs(settings):
    app = metrics_app(service="x", liveness=None)
    answers = []
    environ = {"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET"}
    body = b"".join(app(environ, lambda status, headers: answers.append(status)))
    assert answers == ["200 OK"] and json.loads(body) == {"service": "x", "status": "ok"}


# -- gauges set by the domain -----------------------------------------------------------------------


def test_the_circuit_breaker_gauge_is_1_from_opening_until_a_call_succeeds():
    clock = Clock()
    breaker = gateway.CircuitBreaker(threshold=2, pause=10, max_pause=60, clock=clock, metrics=True)
    openings = REGISTRY.get_sample_value("payment_gateway_circuit_openings_total") or 0
    breaker.success()
    assert REGISTRY.get_sample_value("payment_gateway_circuit_open") == 0
    breaker.failure(RetryableError("503"))
    assert REGISTRY.get_sample_value("payment_gateway_circuit_open") == 0, "one failure: still closed"
    assert isinstance(breaker.failure(RetryableError("503")), DependencyDown)
    assert REGISTRY.get_sample_value("payment_gateway_circuit_open") == 1
    clock.now += 11  # the pause is over: half-open, still 1 until the probe answers
    breaker.check()
    assert REGISTRY.get_sample_value("payment_gateway_circuit_open") == 1
    breaker.failure(RetryableError("503"))  # the probe failed: open again
    assert REGISTRY.get_sample_value("payment_gateway_circuit_openings_total") == openings + 2
    clock.now += 21
    breaker.success()
    assert REGISTRY.get_sample_value("payment_gateway_circuit_open") == 0


def test_a_breaker_made_for_a_test_leaves_the_process_gauge_alone():
    gateway.CIRCUIT_OPEN.set(0)
    breaker = gateway.CircuitBreaker(threshold=1, pause=10, max_pause=60)
    breaker.failure(RetryableError("503"))
    assert REGISTRY.get_sample_value("payment_gateway_circuit_open") == 0


@pytest.mark.django_db
def test_the_orders_gauges_count_pending_orders_past_the_bound(settings):
    from apps.inventory.services import product_ensure
    from apps.orders.models import Order
    from apps.orders.monitoring import refresh_gauges
    from apps.orders.services import order_place

    settings.ORDERS_STUCK_AFTER_SECONDS = 300
    refresh_gauges()
    assert REGISTRY.get_sample_value("orders_stuck") == 0
    assert REGISTRY.get_sample_value("orders_pending_oldest_age_seconds") == 0

    product_ensure(sku="SKU-GAUGE", name="Gauge", price=Decimal("1.00"), stock_on_hand=100)
    old, older, _recent, decided = (order_place(customer_id="c", lines=[("SKU-GAUGE", 1)]) for _ in range(4))
    now = timezone.now()
    Order.objects.filter(pk=old.pk).update(created_at=now - timedelta(minutes=6))
    Order.objects.filter(pk=older.pk).update(created_at=now - timedelta(hours=1))
    Order.objects.filter(pk=decided.pk).update(created_at=now - timedelta(hours=2), status=Order.Status.CONFIRMED)
    refresh_gauges()
    assert REGISTRY.get_sample_value("orders_stuck") == 2
    assert REGISTRY.get_sample_value("orders_pending_oldest_age_seconds") == pytest.approx(3600, abs=30)


def test_the_orders_consumer_declares_the_gauges_its_runner_refreshes():
    from apps.eventbus.registry import registry
    from apps.orders.monitoring import refresh_gauges

    assert registry.consumer("orders").resolved_gauges == [refresh_gauges]


# -- make run's ports -------------------------------------------------------------------------------


def test_make_run_gives_every_process_that_serves_metrics_a_port_of_its_own(tmp_path):
    ports = metrics_ports()
    assert set(ports) == set(SERVES_METRICS) and len(set(ports.values())) == len(ports)
    programs = platform_programs(host="127.0.0.1", port=8000, metrics=ports, web_metrics_dir=tmp_path)
    programs = {program.name: program for program in programs}
    assert programs["relay"].argv[-3:] == ["runrelay", "--metrics-port", str(ports["relay"])]
    for name in CONSUMERS:
        assert programs[name].argv[-4:] == ["runconsumer", "--metrics-port", str(ports[name]), name]
    assert programs["web"].env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert "PROMETHEUS_MULTIPROC_DIR" not in programs["worker"].env
    urls = dict(metrics_urls(host="0.0.0.0", port=8000, metrics=ports))
    assert urls["web"] == "http://127.0.0.1:8000/metrics"
    assert urls["payments"] == f"http://127.0.0.1:{ports['payments']}/metrics"
    assert set(urls) == {"web", *SERVES_METRICS}


def test_gunicorns_master_removes_only_the_metrics_files_of_an_earlier_run(tmp_path, monkeypatch):
    from orders_platform import webmetrics

    folder = tmp_path / "shm"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    webmetrics.on_starting(server=None)
    assert folder.is_dir(), "created when missing"
    old = ["counter_12.db", "histogram_12.db", "gauge_all_12.db", "gauge_livesum_13.db"]
    for name in [*old, "sem.mp-xyz", "other.db"]:
        (folder / name).write_text("x")
    webmetrics.on_starting(server=None)
    assert sorted(path.name for path in folder.iterdir()) == ["other.db", "sem.mp-xyz"]

    (folder / "gauge_livesum_14.db").write_text("x")
    (folder / "counter_14.db").write_text("x")
    webmetrics.child_exit(server=None, worker=type("Worker", (), {"pid": 14})())
    assert not (folder / "gauge_livesum_14.db").exists(), "a dead worker's live gauges go"
    assert (folder / "counter_14.db").exists(), "its counts stay: they were counted"
