import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import start_http_server

from apps.eventbus import tracing
from apps.eventbus.consuming.runner import ConsumerRunner
from apps.eventbus.producing.relay import Relay
from apps.eventbus.registry import registry

RELAY = "outbox"


class Command(BaseCommand):
    help = "Run one declared consumer (or the outbox relay: NAME=outbox) until SIGTERM/SIGINT."

    def add_arguments(self, parser):
        parser.add_argument("name", help=f"a declared consumer, or {RELAY!r} for the outbox relay")
        parser.add_argument("--batch", type=int, default=None, help="messages per fetch / rows per relay round")
        parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")

    def handle(self, *args, name, batch, metrics_port, **options):
        if batch is not None and batch < 1:
            raise CommandError("--batch must be at least 1")
        if name == RELAY:
            worker = Relay(
                batch_size=batch or settings.EVENTBUS["RELAY_BATCH_SIZE"],
                poll_interval=settings.EVENTBUS["RELAY_POLL_SECONDS"],
            )
        else:
            try:
                spec = registry.consumer(name)
            except KeyError as exc:
                raise CommandError(f"{exc.args[0]}; or {RELAY!r} for the relay") from None
            worker = ConsumerRunner(spec, batch_size=batch)
        tracing.configure(service_name=f"orders-platform-{name}")
        if metrics_port:
            start_http_server(metrics_port, addr="0.0.0.0")
        asyncio.run(self._run(worker))

    async def _run(self, worker):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)
