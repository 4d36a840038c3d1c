"""Streams and consumers, declared in code in one registry.

Domain apps declare their streams and consumers from ``AppConfig.ready()``; the eventbus
declares the DLQ stream and the ``dead-letters`` consumer. ``nats_setup`` and
``runconsumer`` create or update what is declared here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from django.conf import settings
from django.utils.module_loading import import_string

REDELIVER_PREFIX = "redeliver"  # redeliver.<STREAM>.<consumer>: the redelivery subject of one consumer in a stream
DLQ_STREAM = "DLQ"
DLQ_PREFIX = "dlq"
# The server's MAX_DELIVERIES advisories are core NATS messages: kept in a stream, none is
# lost while no replica of the consumer concerned is running.
ADVISORY_STREAM = "ADVISORIES"
OPERATOR_STREAM = "OPERATOR"  # operator.>: what operators did to dead letters and consumers (apps/eventbus/events.py)
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, ``>`` the rest (one token or more)."""
    pattern_tokens, subject_tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or (token != "*" and token != subject_tokens[index]):
            return False
    return len(pattern_tokens) == len(subject_tokens)


def batch_handler(function: Callable | None = None, *, prepare: Callable | None = None) -> Callable:
    """Mark a handler that takes a list of events (of one subject, in stream order) at once.

    The runner calls it with every event of a fetched batch that it handles, inside the
    batch's transaction, so it can write with one ``bulk_create``. When it raises, the runner
    calls it again with one event at a time to find the message that fails, so it must
    accept a list of any length, including one.

    ``prepare`` is for slow I/O (a provider's API): the runner calls ``prepare(events)``
    before the batch's transaction, holding no transaction or row lock, possibly while it
    handles earlier batches (``ConsumerSpec.pipeline``), and passes what it returns to the
    handler: ``handler(events, prepared)``; it returns a mapping (keyed by something the
    events carry, such as an order id). ``prepare`` must be idempotent (a redelivered or
    already handled message reaches it again) and should report per-event failures in its
    result for the handler to raise, not raise them itself: when it raises, it is called
    again one event at a time to find the event that fails.
    """

    def mark(handler: Callable) -> Callable:
        handler.eventbus_batch = True
        handler.eventbus_prepare = prepare
        return handler

    return mark(function) if function is not None else mark


def is_batch_handler(handler: Callable) -> bool:
    return getattr(handler, "eventbus_batch", False)


def preparer_of(handler: Callable | None) -> Callable | None:
    """The ``prepare`` step of a batch handler, if it has one."""
    return getattr(handler, "eventbus_prepare", None)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str = ""
    max_age_days: int | None = None  # None: settings.EVENTBUS["STREAM_MAX_AGE_DAYS"]
    redelivery: bool = True  # carries redeliver.<NAME>.> for targeted reprocessing

    @property
    def all_subjects(self) -> list[str]:
        extra = [f"{REDELIVER_PREFIX}.{self.name}.>"] if self.redelivery else []
        return [*self.subjects, *extra]

    def captures(self, subject: str) -> bool:
        """The stream stores messages on ``subject`` (its redelivery subjects included)."""
        return any(subject_matches(pattern, subject) for pattern in self.all_subjects)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer (one per stream its subjects live in) and its handlers.

    ``handlers`` maps a subject or wildcard to a handler (a callable or its dotted path).
    A decoding consumer's handler gets the validated event; a ``raw`` consumer's handler
    gets the :class:`apps.eventbus.consuming.runner.Delivery` (e.g. the audit log, which keeps
    messages of any contract).
    """

    name: str
    handlers: Mapping[str, Callable | str]
    description: str = ""
    raw: bool = False
    ack_wait: float | None = None
    max_deliver: int | None = None
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    max_ack_pending: int | None = None
    batch_size: int | None = None
    # Batches in hand at once: fetched, preparing (see batch_handler's prepare) or handled.
    # Handling stays one batch at a time, in order; above 2 only prepare steps overlap.
    pipeline: int = 2
    options: Mapping[str, object] = field(default_factory=dict)
    # Callables (or dotted paths) that read the domain's state and set its gauges (e.g. orders
    # stuck in PENDING): the runner calls them every ``GAUGE_POLL`` seconds in a thread of their
    # own, so the process that runs this consumer exports them. They read, never write.
    gauges: tuple[Callable | str, ...] = ()

    @property
    def subjects(self) -> list[str]:
        return list(self.handlers)

    def setting(self, key: str):
        """A delivery setting: the declaration's value, else the project default."""
        value = getattr(self, key.lower())
        return value if value is not None else settings.EVENTBUS[key]

    @cached_property
    def resolved_gauges(self) -> list[Callable]:
        return [import_string(gauge) if isinstance(gauge, str) else gauge for gauge in self.gauges]

    @cached_property
    def resolved_handlers(self) -> list[tuple[str, Callable]]:
        return [
            (pattern, import_string(handler) if isinstance(handler, str) else handler)
            for pattern, handler in self.handlers.items()
        ]

    def handler_for(self, subject: str) -> Callable | None:
        try:
            return self._handler_cache[subject]
        except KeyError:
            handler = next(
                (handler for pattern, handler in self.resolved_handlers if subject_matches(pattern, subject)), None
            )
            self._handler_cache[subject] = handler
            return handler

    @cached_property
    def _handler_cache(self) -> dict[str, Callable | None]:
        return {}

    def nak_delay(self, num_delivered: int) -> float:
        return self.backoff[min(num_delivered, len(self.backoff)) - 1]

    def redeliver_subject(self, stream: str) -> str:
        return f"{REDELIVER_PREFIX}.{stream}.{self.name}"


class Registry:
    def __init__(self) -> None:
        self.streams: dict[str, StreamSpec] = {}
        self.consumers: dict[str, ConsumerSpec] = {}

    def register_stream(self, spec: StreamSpec) -> StreamSpec:
        self.streams[spec.name] = spec
        return spec

    def register_consumer(self, spec: ConsumerSpec) -> ConsumerSpec:
        self.consumers[spec.name] = spec
        return spec

    def consumer(self, name: str) -> ConsumerSpec:
        try:
            return self.consumers[name]
        except KeyError:
            known = ", ".join(sorted(self.consumers)) or "none"
            raise KeyError(f"no consumer named {name!r} is declared (known: {known})") from None

    def captures(self, subject: str) -> bool:
        """Some declared stream stores messages on ``subject``: a publish to it can be acknowledged."""
        return any(spec.captures(subject) for spec in self.streams.values())

    def stream_for(self, subject: str) -> StreamSpec:
        for spec in self.streams.values():
            if spec.captures(subject):
                return spec
        raise KeyError(f"no declared stream captures {subject!r}")

    def streams_of(self, consumer: ConsumerSpec) -> dict[str, list[str]]:
        """Stream name -> the consumer's filter subjects in that stream (its redelivery subject included)."""
        filters: dict[str, list[str]] = {}
        for subject in consumer.subjects:
            stream = self.stream_for(subject)
            filters.setdefault(stream.name, []).append(subject)
        for stream_name, subjects in filters.items():
            if self.streams[stream_name].redelivery:
                subjects.append(consumer.redeliver_subject(stream_name))
        return filters

    @contextlib.contextmanager
    def override(self) -> Iterator[Registry]:
        """Declare extra streams/consumers for a while (tests); the previous state comes back after."""
        streams, consumers = dict(self.streams), dict(self.consumers)
        try:
            yield self
        finally:
            self.streams, self.consumers = streams, consumers


registry = Registry()

registry.register_stream(
    StreamSpec(DLQ_STREAM, (f"{DLQ_PREFIX}.>",), description="Dead letters of every consumer", redelivery=False)
)
registry.register_stream(
    StreamSpec(
        ADVISORY_STREAM,
        (f"{MAX_DELIVERIES_ADVISORY}.>",),
        description="MAX_DELIVERIES advisories, so the runners can dead-letter what the server gave up on",
        max_age_days=7,
        redelivery=False,
    )
)
registry.register_stream(
    StreamSpec(
        OPERATOR_STREAM,
        ("operator.>",),
        description="Operator actions on dead letters and consumers, and their outcomes (for the audit log)",
    )
)
registry.register_consumer(
    ConsumerSpec(
        "dead-letters",
        handlers={f"{DLQ_PREFIX}.>": "apps.eventbus.deadletters.recorder.on_dead_letter"},
        description="Records every dead letter as a DeadLetter row for the admin",
        raw=True,
        max_deliver=20,
    )
)
