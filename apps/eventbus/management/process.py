"""What ``runconsumer`` and ``runrelay`` share: a long-running worker with tracing and a metrics
port, stopped by SIGTERM or SIGINT (it finishes what it has in hand first).

The metrics port (``--metrics-port``, 9100 in the deployments) serves, from a thread of its own:

* ``GET /metrics``: Prometheus text (prometheus_client's WSGI app: ``name[]`` filters, gzip and
  OpenMetrics negotiation included);
* ``GET /healthz``: 200 and a small JSON body while the worker is healthy, 503 when its work
  loop has completed no fetch/round, or the NATS server has answered none of its requests, for
  more than ``EVENTBUS["HEALTH_STALE_SECONDS"]`` (alive but deaf: a restart reconnects it).
  A worker that waits for a dependency on purpose (a database outage, a circuit breaker's
  pause) stays 200, ``"status": "waiting"``. See :class:`apps.eventbus.metrics.Liveness`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import signal
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from apps.eventbus import tracing
from apps.eventbus.metrics import Liveness

METRICS_ADDRESS = "0.0.0.0"  # scraped and probed from outside the container


def run_until_signalled(worker, *, service: str, metrics_port: int | None) -> None:
    """Run ``worker.run(stop)`` until a signal sets ``stop``. SIGUSR1 prints every thread's stack
    to stderr (``kill -USR1 PID``: what a stuck process is waiting for), and the process goes on."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    tracing.configure(service_name=f"orders-platform-{service}")
    if metrics_port:
        serve_metrics(metrics_port, service=service, liveness=getattr(worker, "liveness", None))
    asyncio.run(_run(worker))


async def _run(worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds the process at exit


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass  # probes every few seconds are no news


def metrics_app(*, service: str, liveness: Liveness | None, registry: CollectorRegistry = REGISTRY):
    """The WSGI app of the metrics port: ``/metrics``, ``/healthz``, 404 for anything else."""
    metrics = make_wsgi_app(registry)
    stale_after = float(settings.EVENTBUS["HEALTH_STALE_SECONDS"])

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "").rstrip("/") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            healthy, body = liveness.check(stale_after) if liveness is not None else (True, {"status": "ok"})
            start_response(
                "200 OK" if healthy else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            )
            return [json.dumps({"service": service, **body}).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def serve_metrics(port: int, *, service: str, liveness: Liveness | None, address: str = METRICS_ADDRESS) -> _Server:
    """Serve ``metrics_app`` on ``address:port`` from a daemon thread; the server (``.shutdown()``)."""
    server = make_server(address, port, metrics_app(service=service, liveness=liveness), _Server, _Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
