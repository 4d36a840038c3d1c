"""The consumer runner: the asyncio half of ``manage.py runconsumer NAME``.

Fetches batches from the consumer's durable pull subscriptions (one per stream its
subjects live in), hands each batch to :class:`BatchProcessor` in a worker thread, then
settles every message from the outcome: ack, ``nak(delay)``, or dead letter + ``term``.
Handlers never see NATS; acks happen only after the batch's transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connections
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoServersError, StaleConnectionError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from apps.eventbus import metrics
from apps.eventbus.consuming.delivery import Delivery, Outcome
from apps.eventbus.consuming.processing import BatchProcessor, Prepared, database_ready
from apps.eventbus.deadletters.codec import dead_letter_headers, dlq_subject, fit_dead_letter
from apps.eventbus.deadletters.services import dead_letter_park_body
from apps.eventbus.errors import DependencyDown
from apps.eventbus.jetstream.connection import ConnectionLost, close_client, connect
from apps.eventbus.jetstream.provisioning import ensure_consumer, ensure_stream
from apps.eventbus.registry import (
    ADVISORY_STREAM,
    DLQ_STREAM,
    MAX_DELIVERIES_ADVISORY,
    ConsumerSpec,
    Registry,
    preparer_of,
    registry,
)

logger = logging.getLogger(__name__)

FETCH_WAIT = 1.0  # seconds a fetch waits for messages; also the worst-case shutdown latency
PENDING_POLL = 5.0
DATABASE_PROBE = 1.0  # seconds between checks of a database that was unavailable
# A fetch that fails for one of these waits and tries again (the client reconnects by itself,
# JetStream answers 503 while the server starts or stops); anything else ends the process.
FETCH_TRANSIENT = (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoServersError,
    StaleConnectionError,
    ServiceUnavailableError,
    OSError,
)

__all__ = ["ConnectionLost", "ConsumerRunner", "MaxDeliveriesExceeded"]


def held(outcome: Outcome) -> bool:
    """Not the message's fault: a dependency every message needs is down. The runner keeps such
    messages in hand (in progress on the server, no delivery spent) and handles them again
    once the dependency is back."""
    return outcome.kind == "unavailable" or isinstance(outcome.error, DependencyDown)


class MaxDeliveriesExceeded(Exception):
    """The server gave up on a message (its last delivery was never acknowledged)."""


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
        self.lanes = reg.streams_of(spec)  # stream -> filter subjects
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
        self.last_fetch = metrics.CONSUMER_LAST_FETCH.labels(spec.name)  # the liveness signal

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and settled first."""
        self.nc = await connect(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        try:
            for stream in {*self.lanes, DLQ_STREAM, ADVISORY_STREAM}:
                await ensure_stream(self.js, self.registry.streams[stream])
            subscriptions = {}
            for stream, subjects in self.lanes.items():
                await ensure_consumer(self.js, self.spec, stream, subjects)
                subscriptions[stream] = await self.js.pull_subscribe_bind(durable=self.spec.name, stream=stream)
            advisories = await self._advisory_subscription()
            logger.info(
                "consumer %s running on %s (batch %d)", self.spec.name, ", ".join(sorted(self.lanes)), self.batch_size
            )
            poller = asyncio.create_task(self._poll_pending(stop))
            await asyncio.gather(
                *(self._consume(sub, stop) for sub in subscriptions.values()), self._watch_advisories(advisories, stop)
            )
            poller.cancel()
        finally:
            await close_client(self.nc)
            loop = asyncio.get_running_loop()
            for executor in (self.executor, *self.preparers):
                await loop.run_in_executor(executor, connections.close_all)  # each thread's own connection
                executor.shutdown(wait=True)
            logger.info("consumer %s stopped", self.spec.name)

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
                    outcomes = await self._handle(head, stop)
                finally:
                    head.heartbeat.cancel()
                if settling is not None:
                    await settling
                settling = asyncio.create_task(self._settle(head.deliveries, outcomes))
        finally:
            if settling is not None:
                await settling
            if fetching is not None and not fetching.done():
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching
            for batch in in_hand:  # only after an error: redelivered after ack_wait
                batch.heartbeat.cancel()

    async def _handle(self, batch: _Batch, stop: asyncio.Event) -> list[Outcome]:
        """Process a batch; the messages held back by a dependency outage are handled again once
        it is over (only when stopping are they settled as they are: naked, for a later delivery)."""
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(
            self.executor, self.processor.process, batch.deliveries, batch.prepared.result()
        )
        while not stop.is_set() and (waiting := [index for index, outcome in enumerate(outcomes) if held(outcome)]):
            if not await self._wait_for_dependency([outcomes[index] for index in waiting], stop):
                break
            again = await loop.run_in_executor(
                self.executor, self.processor.process, [batch.deliveries[index] for index in waiting]
            )
            for index, outcome in zip(waiting, again, strict=True):
                outcomes[index] = outcome
        return outcomes

    async def _wait_for_dependency(self, outcomes: list[Outcome], stop: asyncio.Event) -> bool:
        """Wait until the dependency the outcomes report down should answer again; False when stopping.

        A circuit breaker's pause (``DependencyDown``) also pauses this consumer on the server,
        so its other replicas stop knocking on the same door; a database outage is waited out
        by probing it. The messages stay in hand meanwhile: their heartbeat keeps them in
        progress, so the server neither redelivers them nor counts a delivery.
        """
        pause = max((o.error.pause for o in outcomes if isinstance(o.error, DependencyDown)), default=None)
        if pause is not None:
            await self._pause(pause)
            await _sleep_until(stop, pause)
            return not stop.is_set()
        loop = asyncio.get_running_loop()
        logger.warning(
            "consumer %s: database unavailable (%s); holding %d message(s) until it answers",
            self.spec.name, outcomes[0].error, len(outcomes),
        )  # fmt: skip
        metrics.CONSUMER_WAITING.labels(self.spec.name, "database").set(1)
        try:
            while not stop.is_set():
                await _sleep_until(stop, DATABASE_PROBE)
                if await loop.run_in_executor(self.executor, database_ready):
                    logger.info("consumer %s: the database answers again", self.spec.name)
                    return True
            return False
        finally:
            metrics.CONSUMER_WAITING.labels(self.spec.name, "database").set(0)

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
            self.last_fetch.set_to_current_time()
            return []
        except FETCH_TRANSIENT as exc:
            self._exit_if_deaf()
            logger.warning("consumer %s: fetch failed (%s); retrying", self.spec.name, type(exc).__name__)
            await asyncio.sleep(0.5)
            return []
        self.last_fetch.set_to_current_time()
        return [Delivery.from_nats(message, decode_event=not self.spec.raw) for message in messages]

    def _exit_if_deaf(self) -> None:
        """A client closed for good (nats-py closes it after some server errors) never reconnects:
        fetching on would keep the process alive but deaf, so it exits for its supervisor to restart."""
        if self.nc.is_closed:
            raise ConnectionLost(f"consumer {self.spec.name}: the NATS connection is closed for good")

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

    async def _settle(self, deliveries: list[Delivery], outcomes: list[Outcome]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            message = delivery.raw_message
            kind = outcome.kind
            try:
                if kind in ("handled", "duplicate"):
                    await message.ack()
                elif held(outcome):  # stopping during an outage: delivered again later
                    kind = "paused"
                    await message.nak(delay=outcome.delay)
                elif kind == "retry" and delivery.num_delivered < self.max_deliver:
                    await message.nak(delay=outcome.delay or self.spec.nak_delay(delivery.num_delivered))
                    self._log(logging.WARNING, "retrying", delivery, outcome)
                else:
                    kind = "dead_lettered"
                    await self._dead_letter(delivery, outcome)
                    await message.term()
            except Exception as exc:  # noqa: BLE001 - the server redelivers after ack_wait; nothing is lost
                logger.warning("consumer %s: settling seq %s failed: %s", self.spec.name, delivery.stream_sequence, exc)
                continue
            counts[delivery.subject, kind] = counts.get((delivery.subject, kind), 0) + 1
        for (subject, kind), count in counts.items():
            metrics.MESSAGES_CONSUMED.labels(self.spec.name, subject, kind).inc(count)

    async def _pause(self, seconds: float) -> None:
        """Pause this consumer on the server (every stream it reads) for ``seconds``."""
        until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        for stream in self.lanes:
            try:
                await self.js.pause_consumer(stream, self.spec.name, until)
            except Exception as exc:  # noqa: BLE001 - the naks with delay still hold the messages back
                logger.warning("consumer %s: could not pause on %s: %s", self.spec.name, stream, exc)
        metrics.CONSUMER_PAUSES.labels(self.spec.name).inc()
        logger.warning("consumer %s paused for %.0fs: a dependency is down", self.spec.name, seconds)

    async def _dead_letter(self, delivery: Delivery, outcome: Outcome) -> None:
        """Publish to ``dlq.<consumer>`` and wait for the DLQ stream to store it.

        Never more than the connected server's max_payload (headers count too, and the server
        closes the connection on a larger message): the headers are shrunk first, and a body
        that still cannot travel is kept whole in the database (DeadLetterBody, written in the
        worker thread) before the dead letter goes without it (see ``fit_dead_letter``).
        """
        headers = dead_letter_headers(self.spec.name, delivery, outcome)
        fitted = fit_dead_letter(headers, delivery.data, self.nc.max_payload)
        if fitted.parked:
            await asyncio.get_running_loop().run_in_executor(
                self.executor,
                lambda: dead_letter_park_body(
                    consumer=self.spec.name,
                    stream=delivery.stream,
                    stream_sequence=delivery.stream_sequence,
                    body=delivery.data,
                ),
            )
        await self.js.publish(dlq_subject(self.spec.name), fitted.body, headers=fitted.headers, stream=DLQ_STREAM)
        metrics.DEAD_LETTERS.labels(self.spec.name).inc()
        self._log(logging.ERROR, "dead-lettered", delivery, outcome)

    async def _advisory_subscription(self):
        """A durable (shared by this consumer's replicas) on the advisories of this consumer only."""
        name = f"{self.spec.name}-advisories"
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            filter_subject=f"{MAX_DELIVERIES_ADVISORY}.*.{self.spec.name}",
        )
        await self.js.add_consumer(ADVISORY_STREAM, config)
        return await self.js.pull_subscribe_bind(durable=name, stream=ADVISORY_STREAM)

    async def _watch_advisories(self, subscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                advisories = await subscription.fetch(10, timeout=FETCH_WAIT)
            except (NatsTimeoutError, TimeoutError):
                continue
            except FETCH_TRANSIENT:
                self._exit_if_deaf()
                await asyncio.sleep(0.5)
                continue
            for advisory in advisories:
                with contextlib.suppress(Exception):
                    if await self._on_max_deliveries(advisory):
                        await advisory.ack()
                    else:
                        await advisory.nak(delay=5)

    async def _on_max_deliveries(self, advisory) -> bool:
        """The safety net: a message whose last delivery died with its process. True when handled.

        Its dead letter has the identity (consumer, stream, sequence) and ``Nats-Msg-Id`` the
        runner gives it: the same dead letter reported by both paths is one DeadLetter row.
        """
        try:
            body = json.loads(advisory.data)
            stream, sequence = body["stream"], int(body["stream_seq"])
            deliveries = int(body.get("deliveries", self.max_deliver))
            if not isinstance(stream, str) or stream not in self.lanes or sequence < 1:
                raise ValueError(f"not a message of this consumer's streams: {str(stream)[:100]!r} #{sequence}")
            stored = await self.js.get_msg(stream, sequence)
        except (ValueError, KeyError, TypeError, RecursionError, NotFoundError, BadRequestError) as exc:
            logger.error("consumer %s: unusable MAX_DELIVERIES advisory: %s", self.spec.name, str(exc)[:500])
            return True  # nothing to retry: the message is gone or the advisory is malformed
        delivery = Delivery(
            stream=stream,
            delivery_subject=stored.subject,
            data=stored.data or b"",
            headers=dict(stored.headers or {}),
            stream_sequence=sequence,
            num_delivered=deliveries,
        )
        error = MaxDeliveriesExceeded(
            f"no acknowledgement after {delivery.num_delivered} deliveries (the process handling the last one "
            "may have died); reported by the server's MAX_DELIVERIES advisory"
        )
        try:
            await self._dead_letter(delivery, Outcome("dead_letter", error))
        except Exception as exc:  # noqa: BLE001 - retried: the advisory stays in its stream
            logger.error("consumer %s: could not dead-letter seq %s: %s", self.spec.name, sequence, exc)
            return False
        return True

    async def _poll_pending(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            total = 0
            for stream in self.lanes:
                with contextlib.suppress(Exception):
                    info = await self.js.consumer_info(stream, self.spec.name)
                    total += info.num_pending + info.num_ack_pending
            metrics.CONSUMER_PENDING.labels(self.spec.name).set(total)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=PENDING_POLL)

    def _log(self, level: int, what: str, delivery: Delivery, outcome: Outcome) -> None:
        logger.log(
            level,
            "%s %s seq %s: %s",
            what,
            _bounded(delivery.subject),
            delivery.stream_sequence,
            _bounded(str(outcome.error), 2000),
            extra={
                "consumer": self.spec.name,
                "subject": _bounded(delivery.subject),
                "message_id": _bounded(delivery.message_id),
                "correlation_id": _bounded(delivery.correlation_id),
                "attempt": delivery.num_delivered,
            },
        )


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _bounded(value: str, limit: int = 200) -> str:
    """A value from a message as a log line may carry it: one line, at most ``limit`` characters."""
    text = value.encode("unicode_escape", "backslashreplace").decode("ascii") if not value.isprintable() else value
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
