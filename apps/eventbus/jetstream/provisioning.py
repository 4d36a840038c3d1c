"""Create or update the declared streams and durable consumers, idempotently."""

from __future__ import annotations

from django.conf import settings
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from apps.eventbus.registry import (
    ADVISORY_STREAM,
    DLQ_STREAM,
    MAX_DELIVERIES_ADVISORY,
    ConsumerSpec,
    Registry,
    StreamSpec,
    registry,
)

DAY = 86_400


def stream_config(spec: StreamSpec) -> StreamConfig:
    config = settings.EVENTBUS
    max_age_days = spec.max_age_days or (
        config["DLQ_MAX_AGE_DAYS"] if spec.name == DLQ_STREAM else config["STREAM_MAX_AGE_DAYS"]
    )
    return StreamConfig(
        name=spec.name,
        description=spec.description or None,
        subjects=spec.all_subjects,
        storage=StorageType.FILE,
        num_replicas=config["STREAM_REPLICAS"],
        duplicate_window=float(config["DUPLICATE_WINDOW_SECONDS"]),
        max_age=float(max_age_days * DAY),
        max_bytes=config["STREAM_MAX_BYTES"],
        allow_direct=True,
    )


def consumer_config(spec: ConsumerSpec, filter_subjects: list[str]) -> ConsumerConfig:
    return ConsumerConfig(
        name=spec.name,
        durable_name=spec.name,
        description=spec.description or None,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=float(spec.setting("ACK_WAIT")),
        max_deliver=spec.setting("MAX_DELIVER"),
        max_ack_pending=spec.setting("MAX_ACK_PENDING"),
        filter_subjects=sorted(filter_subjects),
        **spec.options,
    )


def advisory_durable(consumer: str) -> str:
    """The durable on the ADVISORIES stream that a consumer's replicas share (its MAX_DELIVERIES advisories)."""
    return f"{consumer}-advisories"


def advisory_consumer_config(consumer: str) -> ConsumerConfig:
    name = advisory_durable(consumer)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        filter_subject=f"{MAX_DELIVERIES_ADVISORY}.*.{consumer}",
    )


_STREAM_FIELDS = ("subjects", "num_replicas", "duplicate_window", "max_age", "max_bytes", "description")
_CONSUMER_FIELDS = ("ack_wait", "max_deliver", "max_ack_pending", "filter_subjects", "description")
_ADVISORY_FIELDS = ("ack_wait", "filter_subject")


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> str:
    """``created``, ``updated`` (with the changed fields) or ``unchanged``."""
    wanted = stream_config(spec)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(wanted)
        return "created"
    changed = _differences(info.config, wanted, _STREAM_FIELDS)
    if not changed:
        return "unchanged"
    await js.update_stream(wanted)
    return f"updated ({', '.join(changed)})"


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec, stream: str, filter_subjects: list[str]) -> str:
    return await _ensure_durable(js, stream, consumer_config(spec, filter_subjects), _CONSUMER_FIELDS)


async def ensure_advisory_consumer(js: JetStreamContext, consumer: str) -> str:
    """The ``<consumer>-advisories`` durable (see ``deadletters/advisories.py``)."""
    return await _ensure_durable(js, ADVISORY_STREAM, advisory_consumer_config(consumer), _ADVISORY_FIELDS)


async def _ensure_durable(js: JetStreamContext, stream: str, wanted: ConsumerConfig, fields) -> str:
    """``created``, ``updated`` (with the changed fields) or ``unchanged``."""
    try:
        info = await js.consumer_info(stream, wanted.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, wanted)
        return "created"
    changed = _differences(info.config, wanted, fields)
    if not changed:
        return "unchanged"
    await js.add_consumer(stream, wanted)  # create-or-update on the server
    return f"updated ({', '.join(changed)})"


async def ensure_all(js: JetStreamContext, reg: Registry = registry, consumers: list[str] | None = None) -> list[str]:
    """Ensure every declared stream, then the consumers (all, or those named) with their advisories
    durables; one report line each."""
    report = [f"stream {name}: {await ensure_stream(js, spec)}" for name, spec in reg.streams.items()]
    for name in consumers if consumers is not None else list(reg.consumers):
        spec = reg.consumer(name)
        for stream, subjects in reg.streams_of(spec).items():
            report.append(f"consumer {stream}/{name}: {await ensure_consumer(js, spec, stream, subjects)}")
        outcome = await ensure_advisory_consumer(js, name)
        report.append(f"consumer {ADVISORY_STREAM}/{advisory_durable(name)}: {outcome}")
    return report


def _differences(current, wanted, fields) -> list[str]:
    def normal(value):
        if isinstance(value, list):
            return sorted(value)
        if isinstance(value, float):
            return round(value, 3)
        return value

    return [field for field in fields if normal(getattr(current, field)) != normal(getattr(wanted, field))]
