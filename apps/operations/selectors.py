"""What the cockpit shows about consumers and streams: the live JetStream state beside what
the database knows (dead letters waiting, messages handled lately). One read for the admin
page and the API."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.eventbus.consuming.selectors import processing_rates
from apps.eventbus.deadletters.selectors import dead_letters_open_by_consumer
from apps.eventbus.jetstream import monitoring
from apps.eventbus.jetstream.monitoring import ConsumerState, NatsUnreachable, StreamState


@dataclass
class ConsumerHealth:
    state: ConsumerState
    dead_letters_waiting: int
    handled_per_second: float  # over the last minute

    @property
    def name(self) -> str:
        return self.state.name


@dataclass
class Health:
    streams: list[StreamState] = field(default_factory=list)
    consumers: list[ConsumerHealth] = field(default_factory=list)
    nats_error: str | None = None  # NATS did not answer: no stream or consumer figures
    dead_letters_waiting: dict[str, int] = field(default_factory=dict)


def health() -> Health:
    """Never raises for NATS being down: ``nats_error`` says why the live part is missing."""
    waiting = dead_letters_open_by_consumer()
    try:
        streams, consumers = monitoring.snapshot()
    except NatsUnreachable as exc:
        return Health(nats_error=str(exc), dead_letters_waiting=waiting)
    rates = processing_rates()
    return Health(
        streams=streams,
        consumers=[ConsumerHealth(c, waiting.get(c.name, 0), rates.get(c.name, 0.0)) for c in consumers],
        dead_letters_waiting=waiting,
    )
