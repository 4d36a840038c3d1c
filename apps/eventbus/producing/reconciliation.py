"""Outbox <-> stream reconciliation: sent events a stream lost are published again.

Why: JetStream acknowledges a publish before the message is on disk (by default it fsyncs
every two minutes), so a power loss can lose acknowledged messages (Jepsen, NATS 2.12.1;
nats-server#7564) while their outbox rows say "sent". The relay stored each row's stream
sequence from the publish acknowledgement: the message there must carry the row's id.

A run (:func:`outbox_reconcile`; the Celery task ``eventbus.reconcile_outbox``, on the beat
schedule and on an operator's "Run now", :func:`reconciliation_request`):

1. **The window.** Rows written since ``now - WINDOW_MINUTES`` (never beyond the outbox
   retention: pruning takes older rows) and sent before ``now - SETTLE_SECONDS``. The outbox
   has no index on ``created_at`` or ``sent_at`` (the relay's writes stay cheap, and this
   needs none): the window's first row is found by a binary search of the primary key (rows
   are written, and sent, in id order), then the rows are walked by primary key in chunks.
   A run checks at most ``MAX_ROWS`` rows within ``MAX_SECONDS``; one that stops early keeps
   its last id and the next run goes on from there, so a large window is covered across runs.
   An event written before the window but sent inside it (it waited out an outage longer than
   the window) is not checked.
2. **Look-ups.** ``$JS.API.STREAM.MSG.GET.<stream>`` of each row's sequence, ``CONCURRENCY``
   requests in flight on one connection (about 16,000 a second on the development machine).
   Not a direct get, though the streams allow it: any replica answers a direct get, one that
   lags behind the leader too (a false "missing"), and its answer mixes the stored headers with
   the server's status (a stored ``Status: 404`` header on an empty body reads as "no such
   message" to nats-py); the leader's JSON answer keeps them apart. **Missing**: no message at
   that sequence (lost, deleted, or the stream purged below it), or a message with another
   ``Nats-Msg-Id`` (a stream that lost its tail hands the same sequences to new messages).
3. **Republishing**, one missing row at a time in id order (an aggregate's lost events keep
   their order): the row's body and headers as the relay sent them, but without their
   ``Nats-*`` headers (they made JetStream act once: a roll-up, an expected last sequence),
   with ``Nats-Expected-Stream`` (the stream checked) and the row's ``Nats-Msg-Id``; then the
   row gets the new sequence. After a real loss the stream rebuilt its de-duplication memory
   from what it kept, so the id is unknown to it and the message lands. An acknowledgement
   marked ``duplicate`` means the stream still remembers the id (the message was deleted by
   hand, or a run republished it and died before recording it). Then the message it names is
   looked up: ours, and only the row's sequence was stale (corrected, nothing published);
   not ours, and the message is published once more **without** ``Nats-Msg-Id`` (the stream
   would drop it for the rest of its duplicate window), carrying the id in
   ``Eventbus-Reconciled-Id``, which later runs accept in its place.

Consumers key their ledger on the event's id in the body (a raw consumer: on the broker's id,
else the body's ``message_id``: the same value for an outbox event), so a message a consumer
processed before the loss is not applied again, and one it had not is applied once. A
republished event comes after later events of its aggregate in the stream: the consumers
already take events out of order (conditional updates, outcomes for unknown orders counted).

A row that cannot be looked up or republished is counted failed, with its reason; the run goes
on. The run fails as a whole only when NATS does not answer (every look-up of a chunk failed
to get an answer). Two runs never overlap (``pg_try_advisory_lock``): the second is recorded
as skipped. A run that finds missing messages or fails rows writes ``operator.outbox_reconciled.v1``
(the audit log records it).

**Metrics** come from the web's ``/metrics`` (:class:`RunsCollector`, wired in
``orders_platform/webmetrics.py``): the run happens in a Celery prefork child, which serves no
``/metrics``, and its figures are in PostgreSQL anyway; read there at scrape time they are
never stale and need no poller. They are gauges of the last run, not counters: counters summed
over the kept runs would go down when old runs are pruned. Every web replica reports the same
values: aggregate with ``max``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import nats.errors
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Max, Min
from django.utils import timezone
from nats.js.errors import APIError, NoStreamResponseError
from prometheus_client.core import GaugeMetricFamily

from apps.common import jobs
from apps.common.jobs import Lock
from apps.eventbus.bounds import clean_text, log_value
from apps.eventbus.events import MAX_REPORTED_IDS, OutboxReconciled, OutboxReconciliationRequested, actor_fields
from apps.eventbus.headers import NATS_EXPECTED_STREAM, NATS_MSG_ID, RECONCILED_ID
from apps.eventbus.jetstream.connection import close_client, connect
from apps.eventbus.models import OutboxEvent, ReconciliationRun
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.registry import Registry, registry
from apps.eventbus.wire import NATS_HEADER_LINE, unpublishable

logger = logging.getLogger(__name__)

RUN_KEY, REQUEST_KEY = 1, 2  # of Lock.RECONCILIATION; REQUEST_KEY: a transaction lock, so two clicks queue one run
API = "$JS.API"
NO_MESSAGE = 10037  # JetStream's err_code for "no message found" (none at that sequence)
CHUNK = 500  # rows read and looked up at a time
REQUEST_TIMEOUT = 5.0  # seconds per look-up or publish
MAX_KEPT_IDS = 100  # republished message ids kept on the run
MAX_REASONS = 20  # failed rows described in the run's error text
MAX_REASON = 300
MAX_ERROR = 4000
ACTIVE = (ReconciliationRun.Status.QUEUED, ReconciliationRun.Status.RUNNING)
# Dot-separated tokens of printable ASCII, no wildcard: a space or a line break in a subject would
# corrupt the protocol line it is written on.
PUBLISH_SUBJECT = re.compile(r"[!-)+,\-/-=?-~]+(\.[!-)+,\-/-=?-~]+)*")


class NatsNotAnswering(Exception):
    """No look-up of a chunk got an answer: the run stops instead of counting every row failed."""


# -- the services ---------------------------------------------------------------------------


def reconciliation_request(*, actor) -> tuple[ReconciliationRun, bool]:
    """Queue a run for an operator (the caller checks ``eventbus.run_reconciliation``) and record
    who asked. Returns ``(run, created)``: a run already queued or running is returned instead
    of queuing a second one."""
    with transaction.atomic():
        jobs.lock_for_transaction(Lock.RECONCILIATION, REQUEST_KEY)
        _close_interrupted(holding=False)
        active = ReconciliationRun.objects.filter(status__in=ACTIVE).order_by("id").first()
        if active is not None:
            return active, False
        run = ReconciliationRun.objects.create(triggered_by=actor)
        outbox_write(OutboxReconciliationRequested(run_id=run.pk, **actor_fields(actor)))
        transaction.on_commit(lambda: _enqueue(run.pk))
    return run, True


def _enqueue(run_id: int) -> None:
    from apps.eventbus.tasks import reconcile_outbox

    jobs.queue(reconcile_outbox, run_id, what="reconciliation")  # else the next scheduled run takes it


def outbox_reconcile(*, run_id: int | None = None, reg: Registry = registry) -> ReconciliationRun:
    """Run a reconciliation: ``run_id`` names a queued run (an operator's), else the oldest
    queued run or a new one is run (the schedule's). Safe to call twice at once: the second call
    finds the lock held and records its run as skipped. Never raises for a row or for NATS: the
    run records what happened."""
    if not _try_lock():
        return _skipped(run_id)
    try:
        _close_interrupted(holding=True)
        run = _start(run_id)
        if run.status != ReconciliationRun.Status.RUNNING:  # that run was taken by another task meanwhile
            return run
        tally = _Tally()
        try:
            _reconcile(run, tally, reg)
        except Exception as exc:  # recorded on the run, which the cockpit shows
            logger.warning("reconciliation #%s failed: %s", run.pk, log_value(str(exc)), exc_info=True)
            run.status = ReconciliationRun.Status.FAILED
            tally.error = f"{type(exc).__name__}: {exc}"
        else:
            run.status = ReconciliationRun.Status.COMPLETED
        _finish(run, tally)
        return run
    finally:
        _unlock()


def reconciliation_runs_prune() -> int:
    """Forget runs older than ``EVENTBUS_RECONCILE["HISTORY_DAYS"]``."""
    cutoff = timezone.now() - timedelta(days=settings.EVENTBUS_RECONCILE["HISTORY_DAYS"])
    return ReconciliationRun.objects.filter(created_at__lt=cutoff).exclude(status__in=ACTIVE).delete()[0]


# -- a run, step by step ----------------------------------------------------------------------


@dataclass
class _Row:
    id: int
    message_id: str
    subject: str
    stream_sequence: int
    stream: str | None = None


@dataclass
class _Tally:
    """What a run found, kept in memory and written to the run after each chunk."""

    checked: int = 0
    missing: int = 0
    republished: int = 0
    failed: int = 0
    republished_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    error: str = ""

    def fail(self, row: _Row, reason: str) -> None:
        self.failed += 1
        if len(self.reasons) < MAX_REASONS:  # and as many log lines: a broken stream fails thousands
            self.reasons.append(f"#{row.id} {clean_text(row.message_id, 100, single_line=True)}: {reason}")
            logger.warning(
                "reconciliation: outbox row #%s %s: %s", row.id, log_value(row.message_id), log_value(reason)
            )

    def text(self) -> str:
        lines = [self.error] if self.error else []
        lines += self.reasons
        if self.failed > len(self.reasons):
            lines.append(f"... and {self.failed - len(self.reasons)} more failed row(s)")
        return clean_text("\n".join(lines), MAX_ERROR)


def _try_lock() -> bool:
    return jobs.try_lock(Lock.RECONCILIATION, RUN_KEY)


def _unlock() -> None:
    jobs.unlock(Lock.RECONCILIATION, RUN_KEY)


def _close_interrupted(*, holding: bool) -> None:
    """A run still marked running while nobody holds the lock was interrupted (its worker died).
    ``holding``: this session holds the lock (so no other run is running)."""
    running = ReconciliationRun.objects.filter(status=ReconciliationRun.Status.RUNNING)
    if not running.exists():
        return
    if not holding:
        if not _try_lock():
            return  # a run is under way
        _unlock()
    running.update(
        status=ReconciliationRun.Status.FAILED, finished_at=timezone.now(), error="interrupted (its worker stopped)"
    )


def _skipped(run_id: int | None) -> ReconciliationRun:
    """Another run holds the lock: an operator's queued run is marked skipped; the schedule's is recorded as one."""
    note = "skipped: another reconciliation was running"
    now = timezone.now()
    if run_id is not None:
        ReconciliationRun.objects.filter(pk=run_id, status=ReconciliationRun.Status.QUEUED).update(
            status=ReconciliationRun.Status.SKIPPED, finished_at=now, error=note
        )
        run = ReconciliationRun.objects.filter(pk=run_id).first()
        if run is not None:
            return run
    return ReconciliationRun.objects.create(status=ReconciliationRun.Status.SKIPPED, finished_at=now, error=note)


def _start(run_id: int | None) -> ReconciliationRun:
    """The run to carry out, marked running: the one named (returned as it is unless still
    queued: a task delivered twice runs it once), else the oldest queued one (its task was
    lost), else a new one (the schedule's)."""
    runs = ReconciliationRun.objects.select_related("triggered_by")
    if run_id is not None:
        run = runs.get(pk=run_id)
        if run.status != ReconciliationRun.Status.QUEUED:
            return run
    else:
        run = runs.filter(status=ReconciliationRun.Status.QUEUED).order_by("id").first() or ReconciliationRun()
    run.status, run.started_at = ReconciliationRun.Status.RUNNING, timezone.now()
    run.save()
    return run


def _finish(run: ReconciliationRun, tally: _Tally) -> None:
    _record(run, tally)
    run.finished_at = timezone.now()
    with transaction.atomic():
        run.save(update_fields=["status", "finished_at", *_FIGURES])
        if (run.missing or run.failed) and run.window_start and run.window_end:
            outbox_write(
                OutboxReconciled(
                    run_id=run.pk,
                    window_start=run.window_start,
                    window_end=run.window_end,
                    checked=run.checked,
                    missing=run.missing,
                    republished=run.republished,
                    failed=run.failed,
                    republished_message_ids=tuple(run.republished_ids[:MAX_REPORTED_IDS]),
                    **actor_fields(run.triggered_by),
                )
            )
    logger.info(
        "reconciliation #%s %s: checked %d, missing %d, republished %d, failed %d",
        run.pk, run.status, run.checked, run.missing, run.republished, run.failed,
    )  # fmt: skip


_FIGURES = ["window_start", "window_end", "first_id", "last_id", "complete", "checked", "missing", "republished",
            "failed", "republished_ids", "error"]  # fmt: skip


def _record(run: ReconciliationRun, tally: _Tally) -> None:
    run.checked, run.missing, run.failed = tally.checked, tally.missing, tally.failed
    run.republished = tally.republished
    run.republished_ids = tally.republished_ids[:MAX_KEPT_IDS]
    run.error = tally.text()


def _progress(run: ReconciliationRun, tally: _Tally) -> None:
    _record(run, tally)
    run.save(update_fields=_FIGURES)


def _reconcile(run: ReconciliationRun, tally: _Tally, reg: Registry) -> None:
    config = settings.EVENTBUS_RECONCILE
    now = timezone.now()
    retention = timedelta(days=settings.EVENTBUS["OUTBOX_RETENTION_DAYS"])
    run.window_start = max(now - timedelta(minutes=config["WINDOW_MINUTES"]), now - retention)
    run.window_end = now - timedelta(seconds=config["SETTLE_SECONDS"])
    start = _first_id_written_since(run.window_start) if run.window_end > run.window_start else None
    if start is None:  # nothing written in the window
        run.complete = True
        return
    after = start - 1
    previous = (
        ReconciliationRun.objects.filter(status=ReconciliationRun.Status.COMPLETED)
        .exclude(pk=run.pk)
        .order_by("-id")
        .values("complete", "last_id")
        .first()
    )
    if previous and not previous["complete"] and previous["last_id"] and previous["last_id"] >= start:
        after = previous["last_id"]  # go on where the last run stopped
    deadline = time.monotonic() + config["MAX_SECONDS"]
    streams = _StreamOf(reg)
    loop = asyncio.new_event_loop()
    checker = None  # connected at the first row to look up
    try:
        while True:
            limit = min(CHUNK, config["MAX_ROWS"] - tally.checked)
            rows = _chunk(after, run.window_end, limit)
            if rows:
                checker = checker or loop.run_until_complete(_Checker.open(config["CONCURRENCY"]))
                run.first_id = run.first_id or rows[0].id
                run.last_id = after = rows[-1].id
                _check_chunk(loop, checker, rows, streams, tally)
            run.complete = len(rows) < limit
            _progress(run, tally)
            if run.complete or tally.checked >= config["MAX_ROWS"] or time.monotonic() >= deadline:
                return
    finally:
        if checker is not None:
            loop.run_until_complete(close_client(checker.nc))
        loop.close()


def _first_id_written_since(cutoff: datetime) -> int | None:
    """The first outbox row written at or after ``cutoff``: a binary search of the primary key,
    a few dozen index probes however large the table (``created_at`` follows the id, within the
    few moments two transactions can overlap)."""
    bounds = OutboxEvent.objects.aggregate(low=Min("id"), high=Max("id"))
    low, high = bounds["low"], bounds["high"]
    if high is None or _first_at_or_after(high)[1] < cutoff:
        return None
    while low < high:
        middle = (low + high) // 2
        pk, created_at = _first_at_or_after(middle)
        if created_at >= cutoff:
            high = middle
        else:
            low = pk + 1  # every row up to pk was written before the cutoff
    return _first_at_or_after(low)[0]


def _first_at_or_after(pk: int) -> tuple[int, datetime]:
    return OutboxEvent.objects.filter(id__gte=pk).order_by("id").values_list("id", "created_at")[0]


def _chunk(after: int, sent_until: datetime, limit: int) -> list[_Row]:
    rows = (
        OutboxEvent.objects.filter(
            id__gt=after, sent_at__isnull=False, sent_at__lte=sent_until, stream_sequence__isnull=False
        )
        .order_by("id")
        .values_list("id", "message_id", "subject", "stream_sequence")[:limit]
    )
    return [_Row(*values) for values in rows]


class _StreamOf:
    """The stream that captures a subject (the registry's answer, remembered; bounded)."""

    def __init__(self, reg: Registry) -> None:
        self.reg, self.known = reg, {}

    def __call__(self, subject: str) -> str | None:
        if subject not in self.known:
            if len(self.known) >= 10_000:
                self.known.clear()
            try:
                self.known[subject] = self.reg.stream_for(subject).name
            except KeyError:
                self.known[subject] = None
        return self.known[subject]


def _check_chunk(loop, checker: _Checker, rows: list[_Row], streams: _StreamOf, tally: _Tally) -> None:
    """Look the chunk's rows up, then republish the missing ones, one at a time in id order (the
    row's new sequence is stored as soon as the stream acknowledged it)."""
    asked = []
    for row in rows:
        tally.checked += 1
        row.stream = streams(row.subject)
        if row.stream is None:
            tally.fail(
                row, f"no declared stream captures its subject {clean_text(row.subject, 200, single_line=True)!r}"
            )
        else:
            asked.append(row)
    answers = loop.run_until_complete(checker.look_up_all(asked))
    missing = []
    for row, answer in zip(asked, answers, strict=True):
        if answer.failure:
            tally.fail(row, answer.failure)
        elif not answer.holds(row.message_id):
            tally.missing += 1
            missing.append(row)
            if tally.missing <= MAX_REASONS:
                logger.warning(
                    "reconciliation: %s %s is missing from %s at sequence %s (%s)",
                    log_value(row.subject), log_value(row.message_id), row.stream, row.stream_sequence,
                    answer.describe(),
                )  # fmt: skip
    if asked and all(answer.unanswered for answer in answers):
        raise NatsNotAnswering(f"no look-up of {len(asked)} got an answer; first: {answers[0].failure}")
    if not missing:
        return
    stored = {
        pk: (body, headers)
        for pk, body, headers in OutboxEvent.objects.filter(pk__in=[row.id for row in missing]).values_list(
            "id", "body", "headers"
        )
    }
    for row in missing:
        if row.id not in stored:  # pruned meanwhile
            tally.fail(row, "the outbox row was deleted during the run")
            continue
        body, headers = stored[row.id]
        outcome = loop.run_until_complete(checker.republish(row, body, headers))
        if outcome.failure:
            tally.fail(row, outcome.failure)
            continue
        OutboxEvent.objects.filter(pk=row.id).update(stream_sequence=outcome.sequence)
        if outcome.published:
            tally.republished += 1
            if len(tally.republished_ids) < MAX_KEPT_IDS:
                tally.republished_ids.append(row.message_id)
        else:  # the stream had it at another sequence: only the row was stale
            tally.missing -= 1
        if tally.republished <= MAX_REASONS:
            logger.warning(
                "reconciliation: %s %s %s at %s sequence %s",
                log_value(row.subject), log_value(row.message_id),
                "republished" if outcome.published else "found", row.stream, outcome.sequence,
            )  # fmt: skip


# -- NATS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What the stream holds at a sequence: the message's broker id (and the id a republished copy
    carries instead), nothing (``found`` False), or no answer (``failure``)."""

    found: bool = False
    msg_id: str | None = None
    reconciled_id: str | None = None
    failure: str = ""
    unanswered: bool = False  # the failure is NATS not answering (not an answer about the row)

    def holds(self, message_id: str) -> bool:
        if not self.found:
            return False
        wanted = message_id.strip()  # a header value travels without surrounding blanks
        return self.msg_id == wanted if self.msg_id is not None else self.reconciled_id == wanted

    def describe(self) -> str:
        if not self.found:
            return "no message at that sequence"
        return f"it holds {log_value(self.msg_id or self.reconciled_id or '(no id)', 100)}"


@dataclass(frozen=True)
class _Republished:
    sequence: int | None = None
    published: bool = True  # False: the stream had the message at another sequence
    failure: str = ""


class _Checker:
    """One NATS connection for a run: look-ups with a bounded number in flight, and publishes."""

    def __init__(self, nc, concurrency: int) -> None:
        self.nc, self.js = nc, nc.jetstream(timeout=REQUEST_TIMEOUT)
        self.slots = asyncio.Semaphore(concurrency)

    @classmethod
    async def open(cls, concurrency: int) -> _Checker:
        opening = connect(
            connect_timeout=REQUEST_TIMEOUT,
            max_reconnect_attempts=3,
            reconnect_time_wait=0.5,
            error_cb=_quiet,
            disconnected_cb=None,
        )
        try:
            nc = await asyncio.wait_for(opening, timeout=2 * REQUEST_TIMEOUT)
        except TimeoutError:
            raise NatsNotAnswering(f"no connection to NATS within {2 * REQUEST_TIMEOUT:g}s") from None
        return cls(nc, concurrency)

    async def look_up_all(self, rows: list[_Row]) -> list[_Answer]:
        return await asyncio.gather(*(self._bounded(row.stream, row.stream_sequence) for row in rows))

    async def _bounded(self, stream: str, sequence: int) -> _Answer:
        async with self.slots:
            return await self.look_up(stream, sequence)

    async def look_up(self, stream: str, sequence: int) -> _Answer:
        request = json.dumps({"seq": sequence}).encode()
        try:
            reply = await self.nc.request(f"{API}.STREAM.MSG.GET.{stream}", request, timeout=REQUEST_TIMEOUT)
        except nats.errors.NoRespondersError:
            return _Answer(failure="JetStream did not answer (no responders)", unanswered=True)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            return _Answer(failure=f"no answer from NATS: {type(exc).__name__} {exc}"[:MAX_REASON], unanswered=True)
        try:
            answer = json.loads(reply.data)
            if error := answer.get("error"):
                if error.get("err_code") == NO_MESSAGE:
                    return _Answer(found=False)
                description = clean_text(str(error.get("description", "")), 200, single_line=True)
                return _Answer(failure=f"JetStream answered {error.get('code')}/{error.get('err_code')}: {description}")
            message = answer["message"]
            msg_id, reconciled_id = _ids(base64.b64decode(message.get("hdrs") or ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _Answer(failure=f"an answer it could not read: {type(exc).__name__}")
        return _Answer(found=True, msg_id=msg_id, reconciled_id=reconciled_id)

    async def republish(self, row: _Row, body: str, stored_headers) -> _Republished:
        if not PUBLISH_SUBJECT.fullmatch(row.subject):
            return _Republished(failure="its subject is not one a message can be published to")
        if not isinstance(stored_headers, dict):
            return _Republished(failure="its headers are not a JSON object")
        headers = {name: value for name, value in stored_headers.items() if not str(name).lower().startswith("nats-")}
        data = body.encode()
        headers[NATS_EXPECTED_STREAM] = row.stream  # the stream checked, none other
        same_id = {**headers, NATS_MSG_ID: row.message_id}
        copy = {**headers, RECONCILED_ID: row.message_id}
        if problem := unpublishable({**same_id, **copy}, data, max_payload=self.nc.max_payload):  # either form
            return _Republished(failure=f"cannot be published as it is: {problem}")
        try:
            ack = await self.js.publish(row.subject, data, headers=same_id)
            if not ack.duplicate:
                return _Republished(ack.seq)
            # The stream remembers the id: is the message it names ours?
            there = await self.look_up(row.stream, ack.seq)
            if there.holds(row.message_id):
                return _Republished(ack.seq, published=False)
            ack = await self.js.publish(row.subject, data, headers=copy)
            return _Republished(ack.seq)
        except NoStreamResponseError:
            return _Republished(failure=f"no stream took it (is {row.stream} there?)")
        except APIError as exc:
            description = clean_text(str(exc.description or exc), 200, single_line=True)
            return _Republished(failure=f"JetStream refused it: {exc.code}/{exc.err_code}: {description}")
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            return _Republished(failure=f"not acknowledged: {type(exc).__name__} {exc}"[:MAX_REASON])


def _ids(block: bytes) -> tuple[str | None, str | None]:
    """The first ``Nats-Msg-Id`` and ``Eventbus-Reconciled-Id`` of a stored header block (names
    compared exactly, as the server compares them)."""
    wanted = (NATS_MSG_ID.encode(), RECONCILED_ID.encode())
    found: dict[bytes, str] = {}
    if not block.startswith(NATS_HEADER_LINE.strip()):
        return None, None
    for line in block.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        key = name.strip()
        if colon and key in wanted and key not in found:
            found[key] = value.strip().decode("utf-8", "replace")
    return found.get(wanted[0]), found.get(wanted[1])


async def _quiet(_exc: Exception) -> None:
    """The run records what failed; no line per reconnect attempt."""


# -- metrics, read at scrape time ---------------------------------------------------------------


class RunsCollector:
    """The last runs' figures for Prometheus, read from PostgreSQL when scraped (see the module's
    docstring for why there). Nothing is exported before the first run, or when the database does
    not answer (logged): a scrape never fails for it. ``describe`` names every family without a
    database (what a registry and the alert rules' tests read)."""

    LAST_RUN = {
        "eventbus_reconcile_last_run_timestamp_seconds": "When the last reconciliation run ended (completed or failed)",
        "eventbus_reconcile_last_run_succeeded": (
            "1 if the last reconciliation run completed, 0 if it failed (NATS did not answer)"
        ),
    }
    LAST_SUCCESS = {
        "eventbus_reconcile_last_success_timestamp_seconds": "When the last completed reconciliation run ended",
        "eventbus_reconcile_last_run_checked": (
            "Sent outbox rows the last completed reconciliation run looked up in their stream"
        ),
        "eventbus_reconcile_last_run_missing": (
            "Sent events the last completed reconciliation run found missing from their stream"
        ),
        "eventbus_reconcile_last_run_republished": (
            "Missing events the last completed reconciliation run published again"
        ),
        "eventbus_reconcile_last_run_failed": (
            "Rows the last completed reconciliation run could not look up or republish"
        ),
    }

    def describe(self):
        return [GaugeMetricFamily(name, text) for name, text in {**self.LAST_RUN, **self.LAST_SUCCESS}.items()]

    def collect(self):
        try:
            finished = ReconciliationRun.objects.filter(
                status__in=[ReconciliationRun.Status.COMPLETED, ReconciliationRun.Status.FAILED]
            ).order_by("-id")
            last = finished.values("status", "finished_at").first()
            completed = (
                finished.filter(status=ReconciliationRun.Status.COMPLETED)
                .values("finished_at", "checked", "missing", "republished", "failed")
                .first()
            )
        except DatabaseError as exc:  # the scrape goes on without these figures
            logger.warning("reconciliation metrics: %s", log_value(str(exc)))
            return
        if last is not None:
            values = [
                last["finished_at"].timestamp(),
                1.0 if last["status"] == ReconciliationRun.Status.COMPLETED else 0.0,
            ]
            for (name, text), value in zip(self.LAST_RUN.items(), values, strict=True):
                yield _gauge(name, text, value)
        if completed is not None:
            values = [completed["finished_at"].timestamp()] + [
                float(completed[figure]) for figure in ("checked", "missing", "republished", "failed")
            ]
            for (name, text), value in zip(self.LAST_SUCCESS.items(), values, strict=True):
                yield _gauge(name, text, value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
