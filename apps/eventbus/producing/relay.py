"""The outbox relay: ``manage.py runconsumer outbox``.

A round, on a worker (a thread with its own database connection):

1. **Claim** (a short transaction): lease the oldest unsent rows no other relay holds
   (``FOR UPDATE SKIP LOCKED``, then ``leased_until``), minus the rows whose aggregate has an
   earlier unsent row held elsewhere, and commit. No transaction stays open while NATS is
   waited on: a lease is what keeps other relays off the rows meanwhile, and it runs out by
   itself if this relay dies.
2. **Publish** pipelined in waves (the n-th wave holds each aggregate's n-th event, so an
   aggregate's order survives a failed publish), every wait bounded.
3. **Record** (a short transaction): mark what JetStream acknowledged as sent; set aside as an
   :class:`~apps.eventbus.models.OutboxDeadLetter` a row JetStream can never accept as it is
   (no stream captures its subject, too large for the server, a header it refuses or that
   would corrupt the protocol, a refusal of the stream itself); give the rest back for the
   next round.

A crash after publishing and before recording re-publishes the rows once their lease ends,
with the same ``Nats-Msg-Id``, which JetStream drops inside its duplicate window.

**The rule for an aggregate behind a refused event**: the refused event can never be
published as it is, so holding the aggregate's later events would stop it for good. They are
released (published in order, without it), and the refusal waits in the cockpit for an
operator to requeue a corrected copy or discard it. A transient failure (NATS down, no
acknowledgement in time) stops the aggregate's later events until the next round instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import Count, Min
from django.utils import timezone
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from apps.eventbus import metrics, tracing
from apps.eventbus.headers import NATS_MSG_ID
from apps.eventbus.jetstream.connection import ConnectionLost, close_client, connect
from apps.eventbus.jetstream.provisioning import ensure_stream
from apps.eventbus.models import OutboxDeadLetter, OutboxEvent
from apps.eventbus.producing.outbox import NOTIFY_CHANNEL
from apps.eventbus.registry import Registry, registry
from apps.eventbus.wire import unpublishable

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
# A claimed row is left alone by other relays this long; far above PUBLISH_TIMEOUT (a round
# records its outcome well before), far below the streams' duplicate window (a row re-published
# after its relay died is still dropped as a duplicate).
LEASE_SECONDS = 30
BACKOFF_INITIAL, BACKOFF_MAX = 0.5, 10.0
BACKLOG_POLL = 5.0  # seconds between reads of the outbox backlog and the streams' depth (gauges)
# relay_once found only rows whose aggregates have earlier events another relay is publishing:
# try again shortly (that relay's commit sends no notification).
BLOCKED = -1
BLOCKED_RETRY = 0.05
CONNECT_POLL = 0.2
# Rounds in a row that fail in a way the relay was not written for (not a database or NATS
# outage): then it exits non-zero for its supervisor to restart it, rather than stay up deaf.
MAX_UNEXPECTED = 5


_TABLE = OutboxEvent._meta.db_table
_DEAD_TABLE = OutboxDeadLetter._meta.db_table
# Losing a round's commit in a crash only re-publishes rows JetStream then drops as duplicates,
# so it need not wait for the WAL flush. Every statement of a round goes through an index in
# its order: after a burst the statistics (none yet, or "nothing unsent" from a quiet hour)
# make the planner expect a handful of unsent rows, and it would sort every unsent row to
# claim the first thousand (measured: 38 ms instead of 0.7 ms for 1,000 of 30,000) and scan
# the table to mark them.
_SESSION = (
    "SET LOCAL synchronous_commit = off; "
    "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"
)
_CLAIM = f"""
    SELECT id, message_id, subject, aggregate_id, body, headers FROM {_TABLE}
    WHERE sent_at IS NULL AND (leased_until IS NULL OR leased_until < now())
    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
# Rows are claimed oldest first, so an unsent row below the batch's highest id that is not in
# the batch is one another relay holds (locked or leased). Only then is the per-aggregate
# check needed.
_HELD_ELSEWHERE = f"""
    SELECT EXISTS (SELECT 1 FROM {_TABLE} WHERE sent_at IS NULL AND id < %s AND NOT (id = ANY(%s)))
"""
_EARLIEST_ELSEWHERE = f"""
    SELECT aggregate_id, min(id) FROM {_TABLE}
    WHERE sent_at IS NULL AND aggregate_id = ANY(%s) AND NOT (id = ANY(%s))
    GROUP BY aggregate_id
"""
_LEASE = f"UPDATE {_TABLE} SET leased_until = now() + interval '{LEASE_SECONDS} seconds' WHERE id = ANY(%s)"
_RELEASE = f"UPDATE {_TABLE} SET leased_until = NULL WHERE id = ANY(%s) AND sent_at IS NULL"
# ``o.id = ANY(...)`` repeats the join key so the rows are found through the primary key.
_MARK_SENT = f"""
    UPDATE {_TABLE} AS o SET sent_at = now(), stream_sequence = s.seq, leased_until = NULL
    FROM unnest(%s::bigint[], %s::bigint[]) AS s(id, seq) WHERE o.id = s.id AND o.id = ANY(%s::bigint[])
"""
_SET_ASIDE = f"""
    WITH refused AS (
        DELETE FROM {_TABLE} AS o USING unnest(%s::bigint[], %s::text[]) AS r(id, reason)
        WHERE o.id = r.id AND o.sent_at IS NULL
        RETURNING o.id, o.message_id, o.subject, o.aggregate_id, o.body, o.headers, o.created_at, r.reason
    )
    INSERT INTO {_DEAD_TABLE}
        (outbox_id, message_id, subject, aggregate_id, body, headers, created_at, refused_at, reason, status,
         status_changed_at, note)
    SELECT id, message_id, subject, aggregate_id, body, headers, created_at, now(), reason, %s, now(), '' FROM refused
"""


class _Row(NamedTuple):
    id: int
    message_id: str
    subject: str
    aggregate_id: str
    body: str
    headers: dict | str


def _json(value: dict | str):
    return _parse_headers(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=1024)
def _parse_headers(text: str) -> dict:
    """Most rows share their headers (content type, event type, version): parse each form once.
    Callers copy before adding to it."""
    return json.loads(text)


class Refused(Exception):
    """JetStream can never accept this row as it is: it is set aside, not retried."""


class PublishIncomplete(Exception):
    """Some rows of a round were not acknowledged; they stay unsent and are retried."""


class _Round(NamedTuple):
    acked: list[tuple[_Row, int]]  # (row, stream sequence)
    refused: list[tuple[_Row, str]]  # (row, reason)
    failed: list[tuple[_Row, str]]  # tried, not acknowledged: retried
    held: list[_Row]  # not tried: an earlier event of its aggregate failed


def refusal(subject: str, body: bytes, headers: dict[str, str], *, max_payload: int, captured: bool) -> str | None:
    """Why JetStream can never take this message as it is, checked before sending, or None."""
    if not captured:
        return f"no stream captures the subject {subject[:200]!r}"
    return unpublishable(headers, body, max_payload=max_payload)


class _Acks:
    """Publishes that expect a JetStream acknowledgement, each a future with a bounded wait.

    Not nats-py's ``publish_async``: it takes a pending-slot permit before sending and does not
    give it back when the send itself raises (the connection is down, its buffer is full), so
    the failed rounds of an outage use up the permits and the next publish waits for ever.
    Here a send that raises fails its own future at once, and nothing else is held.
    """

    def __init__(self, nc) -> None:
        self.nc = nc
        self.prefix = ""
        self.waiting: dict[str, asyncio.Future] = {}
        self.tokens = itertools.count()

    async def start(self) -> None:
        self.prefix = f"{self.nc.new_inbox()}."
        await self.nc.subscribe(f"{self.prefix}*", cb=self._on_reply)

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> asyncio.Future:
        token = str(next(self.tokens))
        future = asyncio.get_running_loop().create_future()
        self.waiting[token] = future
        future.add_done_callback(lambda _, token=token: self.waiting.pop(token, None))
        try:
            await self.nc.publish(subject, body, reply=self.prefix + token, headers=headers)
        except Exception as exc:  # noqa: BLE001 - e.g. disconnected: this row waits for the next round
            future.set_exception(exc)
        return future

    async def _on_reply(self, msg) -> None:
        future = self.waiting.get(msg.subject[len(self.prefix) :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":  # no responders: no stream listens
            future.set_exception(NoStreamResponseError())
            return
        try:
            reply = json.loads(msg.data)
            if "error" in reply:
                future.set_exception(APIError.from_error(reply["error"]))
            else:
                future.set_result(PubAck.from_response(reply))
        except Exception as exc:  # noqa: BLE001 - a garbled reply fails this publish, not the relay
            future.set_exception(exc)


def _permanent(exc: BaseException) -> bool:
    """A refusal of the stream itself (a 400: a header it rejects, a message over its limit)."""
    return isinstance(exc, APIError) and exc.code == 400


class Relay:
    def __init__(self, *, batch_size: int, poll_interval: float, workers: int = 2, reg: Registry = registry) -> None:
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.registry = reg
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"outbox-relay-{worker}") for worker in range(workers)
        ]
        self.wake = asyncio.Event()
        self._captured: dict[str, bool] = {}  # subject -> a declared stream takes it (the registry is fixed)
        # /healthz: rounds complete (progress) and the server answers (see metrics.Liveness).
        self.liveness = metrics.Liveness(metrics.RELAY_LAST_ROUND)

    def captured(self, subject: str) -> bool:
        if (taken := self._captured.get(subject)) is None:
            if len(self._captured) >= 10_000:  # subjects come from rows: keep the memo bounded whatever they hold
                self._captured.clear()
            taken = self._captured[subject] = self.registry.captures(subject)
        return taken

    async def run(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.nc = await connect(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        self.acks = _Acks(self.nc)
        try:
            await self.acks.start()
            if settings.EVENTBUS["PROVISION_AT_START"]:  # off where NATS is secured: nats_setup made them
                for spec in self.registry.streams.values():
                    await ensure_stream(self.js, spec)
            listener = asyncio.create_task(self._listen(stop))
            backlog = asyncio.create_task(self._watch_backlog(stop))
            logger.info("outbox relay running (batch %d, %d worker(s))", self.batch_size, len(self.executors))
            try:
                await asyncio.gather(*(self._rounds(executor, stop) for executor in self.executors))
            finally:
                listener.cancel()
                backlog.cancel()
                await asyncio.gather(listener, backlog, return_exceptions=True)  # closes the LISTEN connection
        finally:
            await close_client(self.nc)
            for executor in self.executors:
                await self.loop.run_in_executor(executor, connections.close_all)  # this thread's own
                executor.shutdown(wait=True)
            logger.info("outbox relay stopped")

    async def _rounds(self, executor: ThreadPoolExecutor, stop: asyncio.Event) -> None:
        """Rounds one after another on one thread (one database connection). Lanes overlap one
        round's publishing with another's database work; SKIP LOCKED and the leases split the
        rows, and the aggregate check keeps each aggregate's events in order across workers."""
        delay = BACKOFF_INITIAL
        unexpected = 0
        while not stop.is_set():
            if not await self._connected(stop):
                break
            try:
                published = await self.relay_once(executor)
            except Exception as exc:
                if isinstance(exc, OperationalError | InterfaceError):
                    self.liveness.hold("database")  # healthy meanwhile: a restart would not help
                if isinstance(exc, OperationalError | InterfaceError | PublishIncomplete):
                    logger.warning("outbox relay: %s; retrying in %.1fs", exc, delay)
                else:
                    unexpected += 1
                    if unexpected >= MAX_UNEXPECTED:  # a bug, not an outage: alive but deaf helps nobody
                        logger.critical("outbox relay: %d unexpected failures in a row; exiting", unexpected)
                        raise
                    logger.exception("outbox relay: unexpected failure; retrying in %.1fs", delay)
                await self.loop.run_in_executor(executor, _reset_connection)
                await _sleep_until(stop, delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay, unexpected = BACKOFF_INITIAL, 0
            self.liveness.release()
            self.liveness.progressed()
            if published > 0:
                self.liveness.answered()  # JetStream acknowledged (or refused) what it was sent
            if published == BLOCKED:
                await _sleep_until(stop, BLOCKED_RETRY)
            elif published < self.batch_size:  # drained: wait for a notification, the poll, or stop
                self.wake.clear()
                waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()

    async def _connected(self, stop: asyncio.Event) -> bool:
        """Wait, claiming nothing, until NATS is connected (False when stopping meanwhile). A
        client closed for good never reconnects: the relay exits for its supervisor to restart it."""
        while not self.nc.is_connected:
            if self.nc.is_closed:
                raise ConnectionLost("outbox relay: the NATS connection is closed for good")
            if stop.is_set():
                return False
            await _sleep_until(stop, CONNECT_POLL)
        return True

    async def relay_once(self, executor: ThreadPoolExecutor) -> int:
        """Publish one batch of unsent rows; return how many were published (or set aside), or
        ``BLOCKED`` when every claimed row waits for an earlier event of its aggregate held elsewhere."""
        rows = await self.loop.run_in_executor(executor, self._claim)
        if not rows:
            return 0 if rows == [] else BLOCKED
        try:
            outcome = await self._publish(rows)
            await self.loop.run_in_executor(executor, self._record, outcome)
        except BaseException:
            # Give the rows back now rather than when their lease ends; a relay that dies here
            # leaves that to the lease. Rows JetStream did take go again as duplicates it drops.
            with contextlib.suppress(Exception):
                await self.loop.run_in_executor(executor, self._release, [row.id for row in rows])
            raise
        subjects: dict[str, int] = defaultdict(int)
        for row, _ in outcome.acked:
            subjects[row.subject] += 1
        for subject, count in subjects.items():
            metrics.MESSAGES_PUBLISHED.labels(subject).inc(count)
        for row, reason in outcome.refused:
            metrics.OUTBOX_REFUSED.inc()
            logger.error(
                "outbox relay: JetStream cannot take %s %s as it is (%s); set aside for an operator",
                row.subject[:200], row.message_id, reason,
            )  # fmt: skip
        if outcome.failed:
            row, reason = outcome.failed[0]
            held = f" ({len(outcome.held)} later event(s) of their aggregates held back)" if outcome.held else ""
            raise PublishIncomplete(
                f"{len(outcome.failed)} of {len(rows) - len(outcome.held)} event(s) tried were not acknowledged"
                f"{held}; first: {row.subject} {row.message_id}: {reason}"
            )
        return len(outcome.acked) + len(outcome.refused)

    # -- the two short transactions (worker thread) -----------------------------------

    def _claim(self) -> list[_Row] | None:
        """Lease a batch; [] when nothing is unsent, None when everything claimable is blocked."""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_SESSION)
            cursor.execute(_CLAIM, [self.batch_size])
            rows = [_Row(*values) for values in cursor.fetchall()]
            if not rows:
                return []
            rows = self._without_blocked_aggregates(cursor, rows)
            if not rows:
                return None
            cursor.execute(_LEASE, [[row.id for row in rows]])
        return rows

    def _record(self, outcome: _Round) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_SESSION)
            if outcome.acked:
                self._mark_sent(cursor, outcome.acked)
            if outcome.refused:
                ids = [row.id for row, _ in outcome.refused]
                reasons = [reason[:2000] for _, reason in outcome.refused]
                cursor.execute(_SET_ASIDE, [ids, reasons, OutboxDeadLetter.Status.REFUSED])
            retry = [row.id for row, _ in outcome.failed] + [row.id for row in outcome.held]
            if retry:
                cursor.execute(_RELEASE, [retry])

    def _release(self, ids: list[int]) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_RELEASE, [ids])

    def _mark_sent(self, cursor, acked: list[tuple[_Row, int]]) -> None:
        ids = [row.id for row, _ in acked]
        cursor.execute(_MARK_SENT, [ids, [seq for _, seq in acked], ids])

    def _without_blocked_aggregates(self, cursor, rows: list[_Row]) -> list[_Row]:
        """Keep a row only if no earlier unsent row of its aggregate lies outside this batch
        (another relay holds it)."""
        ids = [row.id for row in rows]
        cursor.execute(_HELD_ELSEWHERE, [max(ids), ids])
        if not cursor.fetchone()[0]:
            return rows
        cursor.execute(_EARLIEST_ELSEWHERE, [list({row.aggregate_id for row in rows}), ids])
        earliest_elsewhere = dict(cursor.fetchall())
        if not earliest_elsewhere:
            return rows
        return [row for row in rows if row.id < earliest_elsewhere.get(row.aggregate_id, row.id + 1)]

    # -- publishing (event loop) ----------------------------------------------------

    async def _publish(self, rows: list[_Row]) -> _Round:
        """Publish in waves: an aggregate's next event goes only once its previous one was
        acknowledged (or refused for good: see the module's rule)."""
        per_aggregate: dict[str, list[_Row]] = defaultdict(list)
        for row in rows:
            per_aggregate[row.aggregate_id].append(row)
        outcome = _Round([], [], [], [])
        stopped: set[str] = set()
        max_payload = self.nc.max_payload
        traced = tracing.enabled()
        for wave in range(max(len(events) for events in per_aggregate.values())):
            batch: list[_Row] = []
            for aggregate, events in per_aggregate.items():
                if wave < len(events):
                    (outcome.held if aggregate in stopped else batch).append(events[wave])
            if not batch:
                continue
            futures: list[asyncio.Future] = []
            spans: list = []  # a PRODUCER span per row that carries a trace: its context goes on the wire
            for row in batch:
                body = row.body.encode()
                stored = _json(row.headers)
                headers = {**stored, NATS_MSG_ID: row.message_id} if isinstance(stored, dict) else {}
                spans.append(tracing.publish_span(row.subject, row.message_id, headers) if traced else None)
                reason = (
                    refusal(row.subject, body, headers, max_payload=max_payload, captured=self.captured(row.subject))
                    if isinstance(stored, dict)
                    else "its headers are not a JSON object"
                )
                if reason is None:
                    futures.append(await self.acks.publish(row.subject, body, headers))
                else:
                    refused: asyncio.Future = self.loop.create_future()
                    refused.set_exception(Refused(reason))
                    futures.append(refused)
            results = await _gather_with_timeout(futures, PUBLISH_TIMEOUT)
            if traced:
                tracing.end_publish_spans(spans, results)
            for row, result in zip(batch, results, strict=True):
                if isinstance(result, Refused):
                    outcome.refused.append((row, str(result)))
                elif isinstance(result, BaseException) and _permanent(result):
                    outcome.refused.append((row, f"JetStream refused it: {result.description or result}"))
                elif isinstance(result, BaseException):
                    stopped.add(row.aggregate_id)
                    outcome.failed.append((row, f"{type(result).__name__} {_describe(result)}".strip()))
                else:
                    outcome.acked.append((row, result.seq))
        return outcome

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
        """The outbox gauges (from the database) and the streams' depth (from the server)."""
        while not stop.is_set():
            with contextlib.suppress(Exception):
                stats = await self.loop.run_in_executor(self.executors[0], _backlog)
                metrics.OUTBOX_BACKLOG.set(stats["count"])
                oldest = stats["oldest"]
                metrics.OUTBOX_OLDEST_AGE.set((timezone.now() - oldest).total_seconds() if oldest else 0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._poll_streams(), timeout=BACKLOG_POLL)
            await _sleep_until(stop, BACKLOG_POLL)

    async def _poll_streams(self) -> None:
        for name in self.registry.streams:
            with contextlib.suppress(NotFoundError):  # deleted by hand: ensured again at the next start
                state = (await self.js.stream_info(name)).state
                metrics.STREAM_MESSAGES.labels(name).set(state.messages)
                metrics.STREAM_BYTES.labels(name).set(state.bytes)
                self.liveness.answered()


def _backlog() -> dict:
    return OutboxEvent.objects.filter(sent_at__isnull=True).aggregate(count=Count("id"), oldest=Min("created_at"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return f"JetStream answered {exc.code}/{exc.err_code}: {exc.description}"
    return str(exc)


async def _gather_with_timeout(futures: list[asyncio.Future], timeout: float) -> list:
    """Each future's result or exception, or ``TimeoutError`` for those still unresolved after
    ``timeout``. Acknowledgements arrive in publish order, so waiting on the first unresolved
    future in turn leaves most of the rest resolved by the time they are reached: far fewer
    waits (and done-callbacks) than futures."""
    deadline = asyncio.get_running_loop().time() + timeout
    results: list = []
    for future in futures:
        if not future.done():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining > 0:
                await asyncio.wait((future,), timeout=remaining)
            if not future.done():
                future.cancel()
                results.append(TimeoutError("no acknowledgement"))
                continue
        if future.cancelled():
            results.append(asyncio.CancelledError("publish cancelled"))
        else:
            results.append(future.exception() or future.result())
    return results


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _reset_connection() -> None:
    with contextlib.suppress(Exception):
        connection.close()
