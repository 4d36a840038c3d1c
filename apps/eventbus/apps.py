from django.apps import AppConfig


class EventbusConfig(AppConfig):
    """The event backbone: NATS connection, contracts, outbox, consumer runner. Knows no domain."""

    name = "apps.eventbus"
    verbose_name = "Event bus"
