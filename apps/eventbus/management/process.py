"""What ``runconsumer`` and ``runrelay`` share: a long-running worker with tracing and a metrics
port, stopped by SIGTERM or SIGINT (it finishes what it has in hand first)."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from apps.eventbus import tracing


def run_until_signalled(worker, *, service: str, metrics_port: int | None) -> None:
    """Run ``worker.run(stop)`` until a signal sets ``stop``."""
    tracing.configure(service_name=f"orders-platform-{service}")
    if metrics_port:
        start_http_server(metrics_port, addr="0.0.0.0")
    asyncio.run(_run(worker))


async def _run(worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)
