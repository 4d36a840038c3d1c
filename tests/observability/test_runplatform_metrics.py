"""``make run`` prints a metrics URL per process, and each answers: the relay and every consumer
on a port of its own (with /healthz), the web on its port, counting the requests of every
gunicorn worker whichever worker answers the scrape (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import re
import signal
import urllib.request

import pytest

from orders_platform.embedded.procs import LOOPBACK, free_port, wait_until
from orders_platform.processes import SERVES_METRICS
from tests.observability.promql import sample_of
from tests.platform.test_runplatform import WORKERS, start_platform, stop, wait_for_workers
from tests.support import http_status, wait_for_status

pytestmark = pytest.mark.slow

LINE = re.compile(r"^  (?P<name>[\w-]+) +(?P<url>http://\S+/metrics)$")
REQUESTS = "orders_platform_django_http_requests_total_by_view_transport_method_total"
HEALTHZ = {"view": "healthz", "transport": "http", "method": "GET"}


def text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def value(url: str, name: str, **labels: str) -> float | None:
    return sample_of(text(url), name, **labels)


def test_make_run_prints_a_metrics_url_per_process_and_each_answers(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://{LOOPBACK}:{port}"
    process, output = start_platform(data_dir, port)
    try:
        output.wait_for(r"^Prometheus metrics", timeout=180)
        lines = output.wait_for(LINE.pattern, count=1 + len(SERVES_METRICS), timeout=10)
        urls = {match["name"]: match["url"] for match in lines}
        assert set(urls) == {"web", *SERVES_METRICS}, urls
        assert urls["web"] == f"{base}/metrics"
        assert len(set(urls.values())) == len(urls), "one port each"

        for name in SERVES_METRICS:
            health = urls[name].replace("/metrics", "/healthz")
            assert wait_for_status(health, 200, timeout=90), (name, "\n".join(output.lines[-40:]))
            assert http_status(urls[name]) == 200, name
        # What each process is there to report, on its own port (the pollers' first rounds may
        # still be under way on a loaded machine: waited for, within bounds).
        for name, sample in (
            ("relay", "eventbus_outbox_backlog "),
            ("relay", 'nats_stream_messages{stream="ORDERS"}'),
            ("payments", 'nats_consumer_pending_messages{consumer="payments"}'),
        ):
            assert wait_until(lambda: sample in text(urls[name]), timeout=30), (name, sample, text(urls[name]))  # noqa: B023
        assert "payment_gateway_circuit_open 0.0" in text(urls["payments"])
        assert wait_until(lambda: "orders_stuck 0.0" in text(urls["orders"]), timeout=30), text(urls["orders"])
        assert "orders_pending_oldest_age_seconds " in text(urls["orders"])

        # The web: every worker's requests, whichever worker answers the scrape.
        assert wait_for_status(f"{base}/healthz", 200, timeout=60)
        wait_for_workers(process)
        before = value(urls["web"], REQUESTS, **HEALTHZ) or 0
        for _ in range(10 * WORKERS):
            assert http_status(f"{base}/healthz") == 200
        counts = {value(urls["web"], REQUESTS, **HEALTHZ) for _ in range(2 * WORKERS)}
        assert counts == {before + 10 * WORKERS}, f"each scrape must count all {10 * WORKERS} requests: {counts}"
    finally:
        code = stop(process, signal.SIGTERM)
    assert code == 0, "\n".join(output.lines[-60:])
