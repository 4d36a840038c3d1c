"""The outbox relay: ``manage.py runconsumer outbox``.

Each round, in one database transaction run in a worker thread: claim the oldest unsent
rows (``FOR UPDATE SKIP LOCKED``, so relays can run side by side), drop the rows whose
aggregate has an earlier unsent row another relay holds, publish the rest pipelined in
waves (the n-th wave holds each aggregate's n-th event, so an aggregate's order survives a
failed publish), then mark what JetStream acknowledged as sent and commit. A crash after
publishing and before the commit re-publishes with the same ``Nats-Msg-Id``, which
JetStream drops inside its duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import psycopg
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import Count, Min
from django.utils import timezone
from nats.js.errors import NoStreamResponseError

from . import metrics
from .connection import close_client, connect
from .delivery import H_MSG_ID
from .models import OutboxEvent
from .outbox import NOTIFY_CHANNEL
from .registry import Registry, registry
from .setup import ensure_stream

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
BACKOFF_INITIAL, BACKOFF_MAX = 0.5, 10.0
BACKLOG_POLL = 5.0


class PublishIncomplete(Exception):
    """Some rows of a round were not acknowledged by JetStream; they stay unsent."""


class Relay:
    def __init__(self, *, batch_size: int, poll_interval: float, reg: Registry = registry) -> None:
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.registry = reg
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay")
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.nc = await connect(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        for spec in self.registry.streams.values():
            await ensure_stream(self.js, spec)
        listener = asyncio.create_task(self._listen(stop))
        backlog = asyncio.create_task(self._watch_backlog(stop))
        logger.info("outbox relay running (batch %d)", self.batch_size)
        delay = BACKOFF_INITIAL
        try:
            while not stop.is_set():
                try:
                    published = await self.loop.run_in_executor(self.executor, self.relay_once)
                except (OperationalError, InterfaceError, PublishIncomplete, NoStreamResponseError) as exc:
                    logger.warning("outbox relay: %s; retrying in %.1fs", exc, delay)
                    await self.loop.run_in_executor(self.executor, _reset_connection)
                    await _sleep_until(stop, delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                except Exception:  # a crash mid-round: nothing was marked sent; the next round re-publishes
                    logger.exception("outbox relay: unexpected failure; retrying in %.1fs", delay)
                    await self.loop.run_in_executor(self.executor, _reset_connection)
                    await _sleep_until(stop, delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                delay = BACKOFF_INITIAL
                if published < self.batch_size:  # drained: wait for a notification, the poll, or stop
                    self.wake.clear()
                    waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
                    await asyncio.wait(waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                    for waiting in waits:
                        waiting.cancel()
        finally:
            listener.cancel()
            backlog.cancel()
            await close_client(self.nc)
            await self.loop.run_in_executor(self.executor, close_old_connections)
            self.executor.shutdown(wait=True)
            logger.info("outbox relay stopped")

    # -- one round (worker thread) --------------------------------------------------

    def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were marked sent."""
        with transaction.atomic():
            rows = list(
                OutboxEvent.objects.select_for_update(skip_locked=True)
                .filter(sent_at__isnull=True)
                .order_by("id")[: self.batch_size]
            )
            if not rows:
                return 0
            rows = self._without_blocked_aggregates(rows)
            acked, failed = asyncio.run_coroutine_threadsafe(self._publish(rows), self.loop).result()
            now = timezone.now()
            for row in acked:
                row.sent_at, row.stream_sequence = now, acked[row]
            OutboxEvent.objects.bulk_update(list(acked), ["sent_at", "stream_sequence"])
        for row in acked:
            metrics.MESSAGES_PUBLISHED.labels(row.subject).inc()
        if failed:
            raise PublishIncomplete(f"{len(failed)} of {len(rows)} event(s) not acknowledged: {failed[0]}")
        return len(acked)

    def _without_blocked_aggregates(self, rows: list[OutboxEvent]) -> list[OutboxEvent]:
        """Keep a row only if no earlier unsent row of its aggregate lies outside this batch."""
        claimed = {row.id for row in rows}
        earliest_elsewhere = dict(
            OutboxEvent.objects.filter(sent_at__isnull=True, aggregate_id__in={row.aggregate_id for row in rows})
            .exclude(id__in=claimed)
            .values("aggregate_id")
            .annotate(first=Min("id"))
            .values_list("aggregate_id", "first")
        )
        return [row for row in rows if row.id < earliest_elsewhere.get(row.aggregate_id, row.id + 1)]

    # -- publishing (event loop) ----------------------------------------------------

    async def _publish(self, rows: list[OutboxEvent]) -> tuple[dict[OutboxEvent, int], list[str]]:
        per_aggregate: dict[str, list[OutboxEvent]] = defaultdict(list)
        for row in rows:
            per_aggregate[row.aggregate_id].append(row)
        acked: dict[OutboxEvent, int] = {}
        failures: list[str] = []
        stopped: set[str] = set()
        for wave in range(max(len(events) for events in per_aggregate.values())):
            batch = [
                events[wave]
                for aggregate, events in per_aggregate.items()
                if wave < len(events) and aggregate not in stopped
            ]
            if not batch:
                break
            futures: list[asyncio.Future] = []
            for row in batch:
                headers = {**row.headers, H_MSG_ID: row.message_id}
                try:
                    futures.append(await self.js.publish_async(row.subject, row.body.encode(), headers=headers))
                except Exception as exc:  # noqa: BLE001 - e.g. the connection is closed: this row waits
                    failed: asyncio.Future = self.loop.create_future()
                    failed.set_exception(exc)
                    futures.append(failed)
            results = await _gather_with_timeout(futures, PUBLISH_TIMEOUT)
            for row, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    stopped.add(row.aggregate_id)
                    failures.append(f"{row.subject} {row.message_id}: {type(result).__name__} {result}".strip())
                else:
                    acked[row] = result.seq
        return acked, failures

    # -- wake-ups and gauges --------------------------------------------------------

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN for the outbox's NOTIFY; polling covers the gaps while it reconnects."""
        while not stop.is_set():
            try:
                params = connection.get_connection_params()
                params.pop("cursor_factory", None)
                params.pop("context", None)
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    async for _ in listener.notifies():
                        self.wake.set()
            except (psycopg.Error, OSError) as exc:
                logger.debug("outbox relay: LISTEN connection lost (%s)", exc)
                await _sleep_until(stop, 1.0)

    async def _watch_backlog(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                stats = await self.loop.run_in_executor(self.executor, _backlog)
                metrics.OUTBOX_BACKLOG.set(stats["count"])
                oldest = stats["oldest"]
                metrics.OUTBOX_OLDEST_AGE.set((timezone.now() - oldest).total_seconds() if oldest else 0)
            await _sleep_until(stop, BACKLOG_POLL)


def _backlog() -> dict:
    return OutboxEvent.objects.filter(sent_at__isnull=True).aggregate(count=Count("id"), oldest=Min("created_at"))


async def _gather_with_timeout(futures: list[asyncio.Future], timeout: float) -> list:
    done, pending = await asyncio.wait(futures, timeout=timeout)
    for future in pending:
        future.cancel()
    return [
        future.exception() or future.result() if future in done else TimeoutError("no acknowledgement")
        for future in futures
    ]


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _reset_connection() -> None:
    with contextlib.suppress(Exception):
        connection.close()
