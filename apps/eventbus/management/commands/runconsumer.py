from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.common import logging as logs
from apps.eventbus.consuming.runner import ConsumerRunner
from apps.eventbus.management.process import run_until_signalled
from apps.eventbus.registry import registry

RELAY = "outbox"  # kept as an alias of ``runrelay``: the relay is no consumer


class Command(BaseCommand):
    help = "Run one declared consumer until SIGTERM/SIGINT (``runconsumer outbox`` runs ``runrelay``)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="a declared consumer")
        parser.add_argument("--batch", type=int, default=None, help="messages per fetch")
        parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")

    def handle(self, *args, name, batch, metrics_port, **options):
        if batch is not None and batch < 1:
            raise CommandError("--batch must be at least 1")
        if name == RELAY:
            call_command("runrelay", batch=batch, metrics_port=metrics_port)
            return
        try:
            spec = registry.consumer(name)
        except KeyError as exc:
            raise CommandError(f"{exc.args[0]}; or {RELAY!r} for the relay (`manage.py runrelay`)") from None
        logs.bind_process(consumer=name)  # every line of this process says which consumer it is
        run_until_signalled(ConsumerRunner(spec, batch_size=batch), service=name, metrics_port=metrics_port)
