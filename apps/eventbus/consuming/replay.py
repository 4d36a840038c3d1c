"""Re-run a consumer's handlers over a stream's history (``manage.py replay``).

An ephemeral consumer (no acks, in memory, deleted when idle) reads the stream from a
sequence or a time, filtered to the consumer's subjects in it, up to the last message at
the start; batches go through the consumer's own BatchProcessor, so the idempotency ledger
applies: replaying what was already handled changes nothing, replaying into an empty
database rebuilds it. Dead letters are not produced: failures are reported and counted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.consuming.processing import BatchProcessor
from apps.eventbus.consuming.settlement import decide
from apps.eventbus.jetstream.connection import close_client, connect
from apps.eventbus.registry import ConsumerSpec, Registry, registry


async def replay(
    spec: ConsumerSpec,
    stream: str,
    *,
    from_seq: int | None = None,
    since: datetime | None = None,
    batch_size: int = 500,
    progress: Callable[[int, int, Counter], None] | None = None,
    reg: Registry = registry,
) -> Counter:
    """How many messages replayed came to each verdict of the settlement table (``handled``,
    ``duplicate``, ``retry``, ``poison``...): what the runner would have decided for a first
    delivery; nothing is retried or dead-lettered here."""
    subjects = reg.streams_of(spec).get(stream)
    if not subjects:
        raise ValueError(f"consumer {spec.name} reads nothing from stream {stream}")
    client = await connect()
    js = client.jetstream()
    outcomes: Counter = Counter()
    try:
        last = (await js.stream_info(stream)).state.last_seq
        name = f"replay-{spec.name}-{uuid.uuid4().hex[:8]}"
        config = ConsumerConfig(
            name=name,
            ack_policy=AckPolicy.NONE,
            filter_subjects=sorted(s for s in subjects if not s.startswith("redeliver.")),
            mem_storage=True,
            inactive_threshold=60.0,
            **_start(from_seq, since),
        )
        await js.add_consumer(stream, config)
        subscription = await js.pull_subscribe_bind(consumer=name, stream=stream)
        processor = BatchProcessor(spec)
        max_deliver = spec.setting("MAX_DELIVER")
        loop, done, position = asyncio.get_running_loop(), False, 0
        while not done:
            try:
                messages = await subscription.fetch(batch_size, timeout=2.0)
            except (NatsTimeoutError, TimeoutError):
                break  # nothing more to read
            deliveries = [Delivery.from_nats(m, decode_event=not spec.raw) for m in messages]
            deliveries = [d for d in deliveries if d.stream_sequence <= last]
            done = not deliveries or deliveries[-1].stream_sequence >= last or len(deliveries) < len(messages)
            if deliveries:
                results = await loop.run_in_executor(None, processor.process, deliveries)
                outcomes.update(
                    decide(result, num_delivered=1, max_deliver=max_deliver, backoff=spec.nak_delay).verdict.value
                    for result in results
                )
                position = deliveries[-1].stream_sequence
            if progress:
                progress(position, last, outcomes)
        await js.delete_consumer(stream, name)
    finally:
        await close_client(client)
    return outcomes


def _start(from_seq: int | None, since: datetime | None) -> dict:
    if from_seq:
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": from_seq}
    if since:
        return {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": since.isoformat()}
    return {"deliver_policy": DeliverPolicy.ALL}
