"""Every long-running process of the platform, as ``make run`` starts them.

Domain consumers join here as they are built; production runs the same commands as
separate deployments (and talks to a real payment provider instead of the simulator).

Metrics: the relay and every consumer serve ``/metrics`` and ``/healthz`` on a port of their
own (``--metrics-port``; ``make run`` picks free ones and prints them); the web process serves
django-prometheus's ``/metrics`` on its own port, in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) so that whichever gunicorn worker answers counts every worker's
requests. The gateway simulator and Celery serve none (docker/observability/README.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from .supervisor import Program
from .webserver import default_workers, web_program

CONSUMERS = ("dead-letters", "inventory", "payments", "orders", "saga-failures", "audit")
SERVES_METRICS = ("relay", *CONSUMERS)  # each on a port of its own: /metrics and /healthz


def platform_programs(
    *, host: str, port: int, metrics: Mapping[str, int] | None = None, web_metrics_dir: Path | None = None
) -> list[Program]:
    """The web process is gunicorn with the ``WEB_*`` settings of the development settings.

    ``metrics``: a metrics port per process of ``SERVES_METRICS`` (none without it);
    ``web_metrics_dir``: the web workers' ``PROMETHEUS_MULTIPROC_DIR`` (empty: the caller wipes it).
    """
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    gateway = urlsplit(settings.PAYMENT_GATEWAY_URL)
    celery = [sys.executable, "-m", "celery", "--app", "orders_platform", "--quiet"]
    ports = dict(metrics or {})

    def port_of(name: str) -> list[str]:
        return ["--metrics-port", str(ports[name])] if name in ports else []

    web = web_program(host=host, port=port, **web_options())
    if web_metrics_dir is not None:
        web = dataclasses.replace(web, env={**web.env, "PROMETHEUS_MULTIPROC_DIR": str(web_metrics_dir)})
    return [
        web,
        Program("relay", [*manage, "runrelay", *port_of("relay")]),
        *(Program(name, [*manage, "runconsumer", *port_of(name), name]) for name in CONSUMERS),
        Program("gateway", [*manage, "rungateway", "--host", gateway.hostname, "--port", str(gateway.port or 80)]),
        Program("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "worker@%h"]),
        Program("beat", [*celery, "beat", "--loglevel", "INFO"]),
    ]


def metrics_ports(names=SERVES_METRICS) -> dict[str, int]:
    """A distinct free port (on every interface, where the metrics servers bind) per name."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in names]
        for sock in sockets:  # all held open at once: no port is handed out twice
            sock.bind(("0.0.0.0", 0))
        return {name: sock.getsockname()[1] for name, sock in zip(names, sockets, strict=True)}


def metrics_urls(*, host: str, port: int, metrics: Mapping[str, int]) -> list[tuple[str, str]]:
    """``(process, URL of its /metrics)``: the web's on the web port, the others on their own."""
    web_host = f"[{host.strip('[]')}]" if ":" in host else host
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else web_host
    return [("web", f"http://{local}:{port}/metrics")] + [
        (name, f"http://127.0.0.1:{metrics[name]}/metrics") for name in SERVES_METRICS if name in metrics
    ]


def web_options() -> dict:
    """The web process's options from the settings (defaults where the settings have none)."""
    return {
        "workers": getattr(settings, "WEB_CONCURRENCY", default_workers()),
        "threads": getattr(settings, "WEB_THREADS", 1),
        "reload": getattr(settings, "WEB_RELOAD", False),
        "access_log": getattr(settings, "WEB_ACCESS_LOG", False),
    }
