from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.eventbus.management.process import run_until_signalled
from apps.eventbus.producing.relay import Relay


class Command(BaseCommand):
    help = "Run the outbox relay (publishes committed outbox rows to JetStream) until SIGTERM/SIGINT."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=None, help="rows per relay round")
        parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")

    def handle(self, *args, batch, metrics_port, **options):
        if batch is not None and batch < 1:
            raise CommandError("--batch must be at least 1")
        relay = Relay(
            batch_size=batch or settings.EVENTBUS["RELAY_BATCH_SIZE"],
            poll_interval=settings.EVENTBUS["RELAY_POLL_SECONDS"],
        )
        run_until_signalled(relay, service="outbox", metrics_port=metrics_port)
