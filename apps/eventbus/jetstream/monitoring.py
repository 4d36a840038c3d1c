"""Live JetStream state for operators: streams and consumers as the server sees them.

Synchronous functions for views and services (each opens a short-lived connection with
bounded timeouts and closes it); :class:`NatsUnreachable` when the server does not answer,
so a page can say so instead of failing. A consumer of the registry is one durable per
stream it reads: its figures are the sums over those durables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from django.conf import settings
from nats.js.errors import NotFoundError

from apps.eventbus.jetstream.connection import connect
from apps.eventbus.registry import Registry, registry

T = TypeVar("T")


class NatsUnreachable(Exception):
    """NATS did not answer (down, unreachable, or too slow)."""


@dataclass(frozen=True)
class StreamState:
    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    last_ts: datetime | None


@dataclass
class ConsumerState:
    """One registry consumer, summed over its durables (one per stream it reads)."""

    name: str
    streams: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # streams where its durable does not exist yet
    pending: int = 0
    ack_pending: int = 0
    redelivered: int = 0
    waiting: int = 0
    paused: bool = False
    paused_until: datetime | None = None
    last_active: datetime | None = None

    @property
    def backlog(self) -> int:
        """Pending + ack pending: the autoscaling signal (``nats_consumer_pending_messages``)."""
        return self.pending + self.ack_pending


def call(operation: Callable[..., Awaitable[T]], timeout: float | None = None) -> T:
    """Run ``operation(js)`` (``js``: a JetStream context) on a fresh connection, each request
    within ``timeout`` seconds (default ``settings.READINESS_TIMEOUT``), all within twice that."""
    timeout = timeout or settings.READINESS_TIMEOUT
    servers = ", ".join(settings.NATS["SERVERS"]) or "(none configured)"
    try:
        return asyncio.run(asyncio.wait_for(_call(operation, timeout), timeout=2 * timeout))
    except TimeoutError:
        raise NatsUnreachable(f"no answer from {servers} within {2 * timeout:g}s") from None
    except (OSError, ConnectionError) as exc:
        raise NatsUnreachable(f"{type(exc).__name__}: {exc} [{servers}]") from None
    except NotFoundError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("nats"):
            raise NatsUnreachable(f"{type(exc).__name__}: {exc} [{servers}]") from None
        raise


async def _call(operation, timeout: float):
    # nats-py retries the first connect forever with max_reconnect_attempts=0: one retry, then give up.
    client = await connect(
        connect_timeout=timeout,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.05,
        error_cb=_quiet,
        disconnected_cb=None,
    )
    try:
        return await operation(client.jetstream(timeout=timeout))
    finally:
        await client.close()


async def _quiet(_exc: Exception) -> None:
    """The caller reports the failure; no per-attempt log lines."""


def snapshot(reg: Registry = registry) -> tuple[list[StreamState], list[ConsumerState]]:
    """Every declared stream and consumer, as the server sees them now."""
    return call(lambda js: _snapshot(js, reg))


async def _snapshot(js, reg: Registry) -> tuple[list[StreamState], list[ConsumerState]]:
    streams = []
    for name, spec in sorted(reg.streams.items()):
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            streams.append(StreamState(name, tuple(spec.all_subjects), 0, 0, 0, 0, 0, None))
            continue
        state = info.state
        streams.append(
            StreamState(
                name=name,
                subjects=tuple(info.config.subjects or ()),
                messages=state.messages,
                bytes=state.bytes,
                first_seq=state.first_seq,
                last_seq=state.last_seq,
                consumers=state.consumer_count,
                last_ts=_parse_time(getattr(state, "last_ts", None)),
            )
        )
    consumers = []
    for name, spec in sorted(reg.consumers.items()):
        consumer = ConsumerState(name)
        for stream in reg.streams_of(spec):
            consumer.streams.append(stream)
            try:
                info = await js.consumer_info(stream, name)
            except NotFoundError:
                consumer.missing.append(stream)
                continue
            consumer.pending += info.num_pending or 0
            consumer.ack_pending += info.num_ack_pending or 0
            consumer.redelivered += info.num_redelivered or 0
            consumer.waiting += info.num_waiting or 0
            if info.paused:
                consumer.paused = True
                until = _parse_time(info.config.pause_until)
                if until and (consumer.paused_until is None or until > consumer.paused_until):
                    consumer.paused_until = until
            for sequence in (info.delivered, info.ack_floor):
                active = sequence.last_active if sequence else None
                if active and (consumer.last_active is None or active > consumer.last_active):
                    consumer.last_active = active
        consumers.append(consumer)
    return streams, consumers


def _parse_time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    text = str(value)
    if text.startswith("0001-01-01"):
        return None
    try:
        # Go prints nanoseconds; Python takes microseconds.
        head, _, rest = text.partition(".")
        if rest:
            digits = "".join(ch for ch in rest if ch.isdigit())
            zone = rest[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
