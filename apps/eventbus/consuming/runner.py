"""The consumer runner: the asyncio half of ``manage.py runconsumer NAME``.

Fetches batches from the consumer's durable pull subscriptions (one per stream its
subjects live in), hands each batch to :class:`BatchProcessor` in a worker thread, asks the
settlement table (:func:`~apps.eventbus.consuming.settlement.decide`) what to do with each
message, and carries it out: ack, ``nak(delay)``, hold until a dependency answers, or dead
letter + ``term``. Handlers never see NATS; acks happen only after the batch's transaction
committed. The MAX_DELIVERIES safety net runs beside it (``deadletters/advisories.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connections
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from apps.eventbus import metrics
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.consuming.processing import BatchProcessor, Prepared, database_ready
from apps.eventbus.consuming.settlement import Cause, Processed, Settle, Verdict, decide
from apps.eventbus.deadletters.advisories import MaxDeliveriesWatcher
from apps.eventbus.deadletters.sending import DeadLetterSender
from apps.eventbus.jetstream.connection import (
    FETCH_TRANSIENT,
    FETCH_WAIT,
    ConnectionLost,
    close_client,
    connect,
    exit_if_closed,
)
from apps.eventbus.jetstream.provisioning import advisory_durable, ensure_consumer, ensure_stream
from apps.eventbus.registry import ADVISORY_STREAM, DLQ_STREAM, ConsumerSpec, Registry, preparer_of, registry

logger = logging.getLogger(__name__)

PENDING_POLL = 5.0
GAUGE_POLL = 15.0  # seconds between calls of a declaration's gauges (ConsumerSpec.gauges)
DATABASE_PROBE = 1.0  # seconds between checks of a database that was unavailable

__all__ = ["ConnectionLost", "ConsumerRunner"]


@dataclass
class _Batch:
    """A fetched batch in hand: its prepare step running or done, kept in progress on the server."""

    deliveries: list[Delivery]
    prepared: asyncio.Future  # -> Prepared
    heartbeat: asyncio.Task


class ConsumerRunner:
    def __init__(self, spec: ConsumerSpec, *, batch_size: int | None = None, reg: Registry = registry) -> None:
        self.spec = spec
        self.registry = reg
        self.batch_size = batch_size or spec.setting("BATCH_SIZE")
        self.filters = reg.streams_of(spec)  # stream -> filter subjects
        spec.resolved_handlers  # noqa: B018 - import the handlers now: a bad path fails at start-up
        self.processor = BatchProcessor(spec)
        # One thread: its Django connection lives across batches; batches are handled one at a time.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"consumer-{spec.name}")
        self.pipeline = max(spec.pipeline, 2)
        # Prepare steps (slow I/O before a batch's transaction) of several batches overlap: one
        # thread (and Django connection) per batch in hand; batch k+pipeline reuses batch k's.
        prepares = any(preparer_of(handler) for _, handler in spec.resolved_handlers)
        self.preparers = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prepare-{spec.name}")
            for _ in range(self.pipeline if prepares else 0)
        ]
        self._next_preparer = itertools.cycle(self.preparers)
        self.max_deliver = spec.setting("MAX_DELIVER")
        self.ack_wait = float(spec.setting("ACK_WAIT"))
        spec.resolved_gauges  # noqa: B018 - likewise
        # One thread for the gauges' reads, off the batches' thread (and its own Django connection).
        self.gauge_executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gauges-{spec.name}") if spec.gauges else None
        )
        # /healthz: fetches complete (progress) and the server answers (see metrics.Liveness).
        self.liveness = metrics.Liveness(metrics.CONSUMER_LAST_FETCH.labels(spec.name))

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and settled first."""
        self.nc = await connect(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        try:
            provision = settings.EVENTBUS["PROVISION_AT_START"]
            if provision:
                for stream in {*self.filters, DLQ_STREAM, ADVISORY_STREAM}:
                    await ensure_stream(self.js, self.registry.streams[stream])
            subscriptions = {}
            for stream, subjects in self.filters.items():
                if provision:
                    await ensure_consumer(self.js, self.spec, stream, subjects)
                else:
                    await self._require_durable(stream, self.spec.name)
                subscriptions[stream] = await self.js.pull_subscribe_bind(durable=self.spec.name, stream=stream)
            if not provision:
                await self._require_durable(ADVISORY_STREAM, advisory_durable(self.spec.name))
            self.dead_letters = DeadLetterSender(self.spec.name, self.nc, self.js, self.executor)
            advisories = MaxDeliveriesWatcher(
                self.spec.name, set(self.filters), self.max_deliver, self.nc, self.js, self.dead_letters
            )
            await advisories.subscribe(provision=provision)
            logger.info(
                "consumer %s running on %s (batch %d)", self.spec.name, ", ".join(sorted(self.filters)), self.batch_size
            )
            pollers = [asyncio.create_task(self._poll_pending(stop))]
            if self.gauge_executor is not None:
                pollers.append(asyncio.create_task(self._poll_gauges(stop)))
            await asyncio.gather(*(self._consume(sub, stop) for sub in subscriptions.values()), advisories.watch(stop))
            for poller in pollers:
                poller.cancel()
        finally:
            await close_client(self.nc)
            loop = asyncio.get_running_loop()
            gauges = [self.gauge_executor] if self.gauge_executor is not None else []
            for executor in (self.executor, *self.preparers, *gauges):
                await loop.run_in_executor(executor, connections.close_all)  # each thread's own connection
                executor.shutdown(wait=True)
            logger.info("consumer %s stopped", self.spec.name)

    async def _require_durable(self, stream: str, durable: str) -> None:
        """Provisioning at start is off: the durable must exist already (``nats_setup``)."""
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            raise RuntimeError(
                f"consumer {self.spec.name}: durable {durable} on stream {stream} does not exist and "
                "EVENTBUS_PROVISION_AT_START is off: run `manage.py nats_setup` (as the admin user) first"
            ) from None

    async def _consume(self, subscription, stop: asyncio.Event) -> None:
        """Fetch, prepare, handle and settle batches as a pipeline of ``pipeline`` batches in hand.

        The next batch is fetched (one fetch at a time) while one is handled; the prepare
        steps of the batches in hand run at once, each in its own thread; handling is one
        batch at a time, in fetch order, in the worker thread; settling batch n overlaps
        handling batch n+1. On stop, every batch in hand is finished and settled.
        """
        in_hand: deque[_Batch] = deque()
        fetching: asyncio.Task | None = None
        settling: asyncio.Task | None = None
        try:
            while True:
                if fetching is None and not stop.is_set() and len(in_hand) < self.pipeline:
                    fetching = asyncio.create_task(self._next_batch(subscription, stop))
                if fetching is not None and (fetching.done() or not in_hand):
                    batch, fetching = await fetching, None
                    if batch is not None:
                        in_hand.append(batch)
                    continue
                if not in_hand:
                    break  # stopping, and nothing left in hand
                head = in_hand[0]
                if not head.prepared.done():
                    waiting = {head.prepared} if fetching is None else {head.prepared, fetching}
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    continue
                in_hand.popleft()
                try:
                    settles = await self._handle(head, stop)
                finally:
                    head.heartbeat.cancel()
                if settling is not None:
                    await settling
                settling = asyncio.create_task(self._settle(head.deliveries, settles))
        finally:
            if settling is not None:
                await settling
            if fetching is not None and not fetching.done():
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching
            for batch in in_hand:  # only after an error: redelivered after ack_wait
                batch.heartbeat.cancel()

    async def _handle(self, batch: _Batch, stop: asyncio.Event) -> list[tuple[Settle, Processed]]:
        """Process a batch and decide each message's settlement. Messages held by a dependency
        outage are processed again once it is over (only when stopping are they settled as
        they are: naked, for a later delivery)."""
        loop = asyncio.get_running_loop()
        processed = await loop.run_in_executor(
            self.executor, self.processor.process, batch.deliveries, batch.prepared.result()
        )
        settles = [self._decide(delivery, result) for delivery, result in zip(batch.deliveries, processed, strict=True)]
        while not stop.is_set() and (
            held := [i for i, (settle, _) in enumerate(settles) if settle.verdict is Verdict.HELD]
        ):
            if not await self._wait_for_dependency([settles[i][0] for i in held], stop):
                break
            again = await loop.run_in_executor(
                self.executor, self.processor.process, [batch.deliveries[i] for i in held]
            )
            for i, result in zip(held, again, strict=True):
                settles[i] = self._decide(batch.deliveries[i], result)
        return settles

    def _decide(self, delivery: Delivery, processed: Processed) -> tuple[Settle, Processed]:
        settle = decide(
            processed,
            num_delivered=delivery.num_delivered,
            max_deliver=self.max_deliver,
            backoff=self.spec.nak_delay,
        )
        return settle, processed

    async def _wait_for_dependency(self, held: list[Settle], stop: asyncio.Event) -> bool:
        """Wait until the dependency the held messages wait for should answer again; False when stopping.

        A circuit breaker's pause (``DependencyDown``) also pauses this consumer on the server,
        so its other replicas stop knocking on the same door; a database outage is waited out
        by probing it. The messages stay in hand meanwhile: their heartbeat keeps them in
        progress, so the server neither redelivers them nor counts a delivery.
        """
        pause = max((h.delay for h in held if h.cause is Cause.DEPENDENCY_DOWN), default=None)
        if pause is not None:
            await self._pause(pause)
            with self.liveness.holding("a dependency (paused)"):
                await _sleep_until(stop, pause)
            return not stop.is_set()
        loop = asyncio.get_running_loop()
        logger.warning(
            "consumer %s: database unavailable; holding %d message(s) until it answers", self.spec.name, len(held)
        )
        metrics.CONSUMER_WAITING.labels(self.spec.name, "database").set(1)
        self.liveness.hold("database")
        try:
            while not stop.is_set():
                await _sleep_until(stop, DATABASE_PROBE)
                if await loop.run_in_executor(self.executor, database_ready):
                    logger.info("consumer %s: the database answers again", self.spec.name)
                    return True
            return False
        finally:
            metrics.CONSUMER_WAITING.labels(self.spec.name, "database").set(0)
            self.liveness.release()

    async def _next_batch(self, subscription, stop: asyncio.Event) -> _Batch | None:
        deliveries = await self._fetch(subscription)
        if stop.is_set():
            await self._release(deliveries)  # not in hand yet: let another replica take them
            return None
        if not deliveries:
            return None
        loop = asyncio.get_running_loop()
        if self.preparers and self.processor.needs_prepare(deliveries):
            prepared = loop.run_in_executor(next(self._next_preparer), self.processor.prepare, deliveries)
        else:
            prepared = loop.create_future()
            prepared.set_result(Prepared())
        return _Batch(deliveries, prepared, asyncio.create_task(self._keep_in_progress(deliveries)))

    async def _fetch(self, subscription) -> list[Delivery]:
        try:
            messages = await subscription.fetch(self.batch_size, timeout=FETCH_WAIT)
        except (NatsTimeoutError, TimeoutError):
            self.liveness.progressed()  # nothing to fetch, or a silent server: the poller tells them apart
            return []
        except FETCH_TRANSIENT as exc:
            exit_if_closed(self.nc, f"consumer {self.spec.name}")
            logger.warning("consumer %s: fetch failed (%s); retrying", self.spec.name, type(exc).__name__)
            await asyncio.sleep(0.5)
            return []
        self.liveness.progressed()
        self.liveness.answered()
        return [Delivery.from_nats(message, decode_event=not self.spec.raw) for message in messages]

    async def _release(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            logger.info("consumer %s: releasing %d prefetched message(s)", self.spec.name, len(deliveries))
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.raw_message.nak()

    async def _keep_in_progress(self, deliveries: list[Delivery]) -> None:
        """Long batches: tell the server we are still working so it does not redeliver."""
        while True:
            await asyncio.sleep(max(self.ack_wait / 3, 0.5))
            for delivery in deliveries:
                with contextlib.suppress(Exception):
                    await delivery.raw_message.in_progress()

    async def _settle(self, deliveries: list[Delivery], settles: list[tuple[Settle, Processed]]) -> None:
        """Carry out each message's settlement (a held one only reaches here when stopping: a nak)."""
        counts: dict[tuple[str, str], int] = {}
        for delivery, (settle, processed) in zip(deliveries, settles, strict=True):
            message = delivery.raw_message
            try:
                match settle.verdict:
                    case Verdict.HANDLED | Verdict.DUPLICATE:
                        await message.ack()
                    case Verdict.RETRIED | Verdict.HELD:
                        await message.nak(delay=settle.delay)
                        if settle.verdict is Verdict.RETRIED:
                            delivery.log(logger, logging.WARNING, "retrying", self.spec.name, processed.error)
                    case Verdict.DEAD_LETTERED:
                        await self.dead_letters.send(delivery, processed.error, processed.traceback)
                        delivery.log(logger, logging.ERROR, "dead-lettered", self.spec.name, processed.error)
                        await message.term()
            except Exception as exc:  # noqa: BLE001 - the server redelivers after ack_wait; nothing is lost
                logger.warning("consumer %s: settling seq %s failed: %s", self.spec.name, delivery.stream_sequence, exc)
                continue
            key = (delivery.subject, settle.verdict.value)
            counts[key] = counts.get(key, 0) + 1
        for (subject, verdict), count in counts.items():
            metrics.MESSAGES_CONSUMED.labels(self.spec.name, subject, verdict).inc(count)

    async def _pause(self, seconds: float) -> None:
        """Pause this consumer on the server (every stream it reads) for ``seconds``."""
        until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        for stream in self.filters:
            try:
                await self.js.pause_consumer(stream, self.spec.name, until)
            except Exception as exc:  # noqa: BLE001 - the naks with delay still hold the messages back
                logger.warning("consumer %s: could not pause on %s: %s", self.spec.name, stream, exc)
        metrics.CONSUMER_PAUSES.labels(self.spec.name).inc()
        logger.warning("consumer %s paused for %.0fs: a dependency is down", self.spec.name, seconds)

    async def _poll_pending(self, stop: asyncio.Event) -> None:
        """The pending gauge, from the server's consumer info (summed over this consumer's
        durables); kept as it was when a stream does not answer (a 0 would scale it down)."""
        gauge = metrics.CONSUMER_PENDING.labels(self.spec.name)
        while not stop.is_set():
            total, answered = 0, 0
            for stream in self.filters:
                with contextlib.suppress(Exception):
                    info = await self.js.consumer_info(stream, self.spec.name, timeout=PENDING_POLL)
                    total += info.num_pending + info.num_ack_pending
                    answered += 1
            if answered:
                self.liveness.answered()
            if answered == len(self.filters):
                gauge.set(total)
            await _sleep_until(stop, PENDING_POLL)

    async def _poll_gauges(self, stop: asyncio.Event) -> None:
        """The declaration's gauges (``ConsumerSpec.gauges``), refreshed in their own thread."""
        loop = asyncio.get_running_loop()
        failing = False
        while not stop.is_set():
            try:
                await loop.run_in_executor(self.gauge_executor, _refresh_gauges, self.spec.resolved_gauges)
                failing = False
            except Exception as exc:  # noqa: BLE001 - a gauge left stale must not stop the consumer
                if not failing:  # once per streak of failures (a database outage is logged elsewhere)
                    logger.warning("consumer %s: refreshing its gauges failed: %s", self.spec.name, exc)
                failing = True
            await _sleep_until(stop, GAUGE_POLL)


def _refresh_gauges(gauges) -> None:
    close_old_connections()  # a connection broken by an outage is replaced
    for gauge in gauges:
        gauge()


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
