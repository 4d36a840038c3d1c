from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventbusConfig(AppConfig):
    """The event backbone: NATS connection, contracts, outbox, consumer runner. Knows no domain."""

    name = "apps.eventbus"
    verbose_name = "Event bus"

    def ready(self):
        # Every app's contracts register on import: a process must know them all to decode.
        autodiscover_modules("events")
