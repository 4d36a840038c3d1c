"""Re-run a consumer's handlers over a stream's history (``manage.py replay``).

An ephemeral consumer (no acks, in memory, deleted when idle) reads the stream from a
sequence or a time, filtered to the consumer's subjects in it, up to the last message at
the start; batches go through the consumer's own BatchProcessor, so the idempotency ledger
applies: replaying what was already handled changes nothing, replaying into an empty
database rebuilds it. Dead letters are not produced: failures are reported and counted.

The handlers and ``progress`` run in one thread of the replay's own (so ``progress`` may use
the ORM); ``progress`` returning False stops the replay after the batch in hand (the cockpit's
cancel, ``apps/operations/replays.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from django.db import connections
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.consuming.processing import BatchProcessor
from apps.eventbus.consuming.settlement import decide
from apps.eventbus.jetstream.connection import close_client, connect
from apps.eventbus.registry import ConsumerSpec, Registry, registry

logger = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 5  # about 10 s (reconnect_time_wait 2 s), on the first connect and after a loss
# A secured NATS drops the worker's delete of its consumer unanswered: wait this, not the client's 5 s.
DELETE_WAIT = 1.0


async def replay(
    spec: ConsumerSpec,
    stream: str,
    *,
    from_seq: int | None = None,
    since: datetime | None = None,
    batch_size: int = 500,
    progress: Callable[[int, int, Counter], bool | None] | None = None,
    reg: Registry = registry,
) -> Counter:
    """How many messages replayed came to each verdict of the settlement table (``handled``,
    ``duplicate``, ``retry``, ``poison``...): what the runner would have decided for a first
    delivery; nothing is retried or dead-lettered here.

    ``progress(position, last, outcomes)`` is called after every batch, in the handlers' thread
    (never on the event loop), with the last stream sequence replayed and the last one to reach;
    when it returns False the replay stops there (what was replayed so far is returned)."""
    subjects = reg.streams_of(spec).get(stream)
    if not subjects:
        raise ValueError(f"consumer {spec.name} reads nothing from stream {stream}")
    loop = asyncio.get_running_loop()
    outcomes: Counter = Counter()
    async with _own_thread(f"replay-{spec.name}") as executor:
        # Bounded: a replay is a job that fails and is started again, not a process that waits for
        # NATS for ever (nats-py's default is 60 attempts 2 s apart, the first connect included).
        client = await connect(max_reconnect_attempts=CONNECT_ATTEMPTS)
        js = client.jetstream()
        try:
            last = (await js.stream_info(stream)).state.last_seq
            # Ephemeral, under a name of its own: the subject names the consumer, which a secured NATS
            # lets the worker create for any name but a declared durable's (permissions.py).
            name = f"replay-{spec.name}-{uuid.uuid4().hex[:12]}"
            config = ConsumerConfig(
                name=name,
                description=f"replay of {stream} through {spec.name}",
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
            done, position = False, 0
            while not done:
                try:
                    messages = await subscription.fetch(batch_size, timeout=2.0)
                except (NatsTimeoutError, TimeoutError):
                    break  # nothing more to read
                deliveries = [Delivery.from_nats(m, decode_event=not spec.raw) for m in messages]
                deliveries = [d for d in deliveries if d.stream_sequence <= last]
                done = not deliveries or deliveries[-1].stream_sequence >= last or len(deliveries) < len(messages)
                if deliveries:
                    results = await loop.run_in_executor(executor, processor.process, deliveries)
                    outcomes.update(
                        decide(result, num_delivered=1, max_deliver=max_deliver, backoff=spec.nak_delay).verdict.value
                        for result in results
                    )
                    position = deliveries[-1].stream_sequence
                if progress and await loop.run_in_executor(executor, progress, position, last, outcomes) is False:
                    break  # stopped by the caller
            await _delete(client, stream, name)
        finally:
            await close_client(client)
    return outcomes


async def _delete(client, stream: str, name: str) -> None:
    """Delete the replay's consumer; where this user may not (a secured NATS: only ``admin``
    deletes consumers), the server removes it after ``inactive_threshold``."""
    try:
        await client.jetstream(timeout=DELETE_WAIT).delete_consumer(stream, name)
    except (NatsError, TimeoutError) as exc:
        logger.info("replay consumer %s on %s left to expire (%s)", name, stream, exc)


@contextlib.asynccontextmanager
async def _own_thread(name: str) -> AsyncIterator[ThreadPoolExecutor]:
    """One thread for the handlers and ``progress``; its database connection is closed at the end."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        yield executor
    finally:
        await asyncio.get_running_loop().run_in_executor(executor, connections.close_all)
        executor.shutdown(wait=True)


def _start(from_seq: int | None, since: datetime | None) -> dict:
    if from_seq:
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": from_seq}
    if since:
        return {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": since.isoformat()}
    return {"deliver_policy": DeliverPolicy.ALL}
