"""Consumer control: pause a consumer on the server (every stream it reads) and resume it,
and the services that do it for an operator and record who did it (``operator.*`` events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import transaction

from apps.eventbus.events import ConsumerPaused, ConsumerResumed, actor_fields
from apps.eventbus.jetstream.monitoring import call
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.registry import Registry, registry

# "Until resumed": the server needs a time; ten years is long enough to mean it.
INDEFINITELY = timedelta(days=3650)


def pause(name: str, until: datetime | None = None, reg: Registry = registry) -> tuple[list[str], datetime]:
    """Pause the consumer's durables on the server (every stream it reads) until ``until``
    (default: until resumed). Returns the streams and the time."""
    until = until or datetime.now(UTC) + INDEFINITELY
    stamp = until.astimezone(UTC).isoformat().replace("+00:00", "Z")
    streams = list(reg.streams_of(reg.consumer(name)))

    async def operation(js):
        for stream in streams:
            await js.pause_consumer(stream, name, stamp)

    call(operation)
    return streams, until


def resume(name: str, reg: Registry = registry) -> list[str]:
    """Resume the consumer's durables now. Returns the streams."""
    streams = list(reg.streams_of(reg.consumer(name)))

    async def operation(js):
        for stream in streams:
            await js.resume_consumer(stream, name)

    call(operation)
    return streams


def consumer_pause(*, name: str, actor, until: datetime | None = None) -> datetime:
    """Pause a consumer on the server (every stream it reads) until ``until`` (default: until
    resumed), then record who did it. The server state changes first: if recording fails the
    caller sees the error with the consumer already paused. Raises ``KeyError`` for an
    undeclared consumer, :class:`apps.eventbus.jetstream.monitoring.NatsUnreachable`."""
    streams, until = pause(name, until)
    with transaction.atomic():
        outbox_write(
            ConsumerPaused(
                consumer=name,
                streams=tuple(streams),
                until=until.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                **actor_fields(actor),
            )
        )
    return until


def consumer_resume(*, name: str, actor) -> None:
    """Resume a paused consumer now, then record who did it (see :func:`consumer_pause`)."""
    streams = resume(name)
    with transaction.atomic():
        outbox_write(ConsumerResumed(consumer=name, streams=tuple(streams), **actor_fields(actor)))
