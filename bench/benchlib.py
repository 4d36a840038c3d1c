"""What the benchmarks share: private servers, Django set-up, NATS helpers, timing and the report.

Imported by the scripts next to it (``python bench/<script>.py`` puts this folder on
``sys.path``); it puts the repository root there too, so ``orders_platform``, ``apps`` and
``tests`` import as they do under ``manage.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orders_platform.embedded import NatsServer, PostgresServer, nats_server_binary  # noqa: E402
from orders_platform.embedded.dev import DEFAULT_SYNC_INTERVAL  # noqa: E402

DATABASE_NAME = "bench"
SYSTEM_PORTS = {5432: "the system PostgreSQL", 4222: "the system nats-server"}
PUBLISH_WINDOW = 2000  # publishes in flight at once (nats-py allows 4000 by default)

Message = tuple[str, bytes, dict[str, str]]  # subject, body, headers


class BenchError(RuntimeError):
    """The benchmark could not finish a measurement (a timeout, a dead worker, a wrong count)."""


# -- servers ------------------------------------------------------------------------


class PrivateServers:
    """A durable PostgreSQL (default options: fsync and synchronous_commit on) and a
    nats-server, both on free ports in a temporary folder; stopped and deleted on exit,
    also after an exception, Ctrl-C or SIGTERM."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="orders-bench-"))
        self.postgres = PostgresServer(self.root / "postgres")
        self.nats = NatsServer(self.root / "nats", name="bench", sync_interval=DEFAULT_SYNC_INTERVAL)  # as make run

    @property
    def database_url(self) -> str:
        return self.postgres.url(DATABASE_NAME)

    def __enter__(self) -> PrivateServers:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self._previous_sigterm = previous
        try:
            _say(f"starting PostgreSQL and nats-server in {self.root}")
            self.postgres.start()
            self.postgres.create_database(DATABASE_NAME)
            self.nats.start()
            for port in (self.postgres.port, self.nats.port):
                if port in SYSTEM_PORTS:
                    raise BenchError(f"refusing to benchmark on port {port} ({SYSTEM_PORTS[port]})")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if "django.db" in sys.modules:
            from django.db import connections

            with contextlib.suppress(Exception):
                connections.close_all()
        with contextlib.suppress(Exception):
            self.nats.stop()
        with contextlib.suppress(Exception):
            self.postgres.stop(mode="immediate")  # the data is deleted next: no checkpoint needed
        shutil.rmtree(self.root, ignore_errors=True)
        signal.signal(signal.SIGTERM, getattr(self, "_previous_sigterm", signal.SIG_DFL))
        _say("servers stopped, temporary folder deleted")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def setup_django(servers: PrivateServers) -> None:
    """Point the test settings at the private servers, set Django up and migrate."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "orders_platform.settings.test"
    os.environ["TEST_DATABASE_URL"] = os.environ["DATABASE_URL"] = servers.database_url
    os.environ["NATS_URL"] = servers.nats.url
    os.environ["PLATFORM_DATA_DIR"] = str(servers.root / "data")  # not the test session's temporary folder
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django
    from django.core.management import call_command

    django.setup()
    # Every runner and relay logs "NATS disconnected" when it closes its connection on stop.
    logging.getLogger("apps.eventbus.jetstream.connection").setLevel(logging.ERROR)
    call_command("migrate", verbosity=0, interactive=False)


def truncate(*models) -> None:
    """Empty the tables of ``models`` (main thread, outside any event loop)."""
    from django.db import connection

    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in models)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY")


# -- environment ----------------------------------------------------------------------


def environment_facts(servers: PrivateServers, params: dict[str, object]) -> list[tuple[str, str]]:
    from importlib.metadata import version

    nats_version = subprocess.run(
        [str(nats_server_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        }
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    facts = [
        ("CPUs", f"{os.cpu_count()} (shared by this process, PostgreSQL and nats-server); load avg {load}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}, asyncio default event loop"),
        ("Libraries", f"Django {version('django')}, nats-py {version('nats-py')}, psycopg {version('psycopg')}"),
        ("nats-server", f"{nats_version} ({servers.nats.url}, file storage, R1)"),
        (
            "PostgreSQL",
            f"{settings['server_version']} (127.0.0.1:{servers.postgres.port}; fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, full_page_writes={settings['full_page_writes']})",
        ),
    ]
    facts += [(name, str(value)) for name, value in params.items()]
    return facts


def print_facts(title: str, facts: list[tuple[str, str]]) -> None:
    print(f"\n== {title} ==")
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        print(f"  {name:<{width}}  {value}")
    print(flush=True)


# -- NATS -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def nats_client(url: str) -> AsyncIterator[nats.NATS]:
    async def quiet(*_args) -> None:
        pass

    client = await nats.connect(url, name="bench", error_cb=quiet, connect_timeout=5)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def reset_stream(js, name: str) -> None:
    """Delete the stream (and so its consumers) and create it again, as declared in the registry."""
    from nats.js.errors import NotFoundError

    from apps.eventbus.jetstream.provisioning import ensure_stream
    from apps.eventbus.registry import registry

    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)
    await ensure_stream(js, registry.streams[name])


async def publish_pipelined(js, messages: Sequence[Message], window: int = PUBLISH_WINDOW) -> None:
    """``publish_async`` everything, ``window`` messages in flight; every publish must be acknowledged."""
    for start in range(0, len(messages), window):
        futures = [
            await js.publish_async(subject, body, headers=dict(headers))
            for subject, body, headers in messages[start : start + window]
        ]
        await asyncio.gather(*futures)


async def stream_messages(js, name: str) -> int:
    return (await js.stream_info(name)).state.messages


async def preload(js, stream: str, messages: Sequence[Message]) -> None:
    """Publish ``messages`` (untimed) and check that ``stream`` holds exactly that many."""
    await publish_pipelined(js, messages)
    stored = await stream_messages(js, stream)
    if stored != len(messages):
        raise BenchError(f"preloaded {stored} messages, expected {len(messages)}")


async def wait_until_settled(js, stream: str, consumer: str, timeout: float = 5.0) -> int:
    """The consumer's pending + unacknowledged count once it reaches 0, or after ``timeout``
    (the server applies acks asynchronously, a moment after the client has flushed them)."""
    deadline = time.perf_counter() + timeout
    while True:
        info = await js.consumer_info(stream, consumer)
        outstanding = info.num_pending + info.num_ack_pending
        if outstanding == 0 or time.perf_counter() > deadline:
            return outstanding
        await asyncio.sleep(0.05)


# -- timing ---------------------------------------------------------------------------


async def wait_for_row_count(
    database_url: str,
    sql: str,
    params: Sequence[object],
    target: int,
    *,
    interval: float,
    timeout: float,
    worker: asyncio.Task | None = None,
    compare: Callable[[int, int], bool] = lambda count, target: count >= target,
) -> float:
    """Poll ``sql`` (a single count) on a connection of its own until ``compare(count, target)``;
    return ``time.perf_counter()`` at that poll. Fails on timeout or when ``worker`` dies first."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        deadline = time.perf_counter() + timeout
        count = -1
        while True:
            count = (await (await conn.execute(sql, params)).fetchone())[0]
            now = time.perf_counter()
            if compare(count, target):
                return now
            if worker is not None and worker.done():
                worker.result()  # raises the worker's error, if any
                raise BenchError(f"the worker stopped with {count} of {target} done")
            if now > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s with {count} of {target} done")
            await asyncio.sleep(interval)


def timeout_for(events: int, slowest_rate: float = 200.0) -> float:
    return max(60.0, events / slowest_rate)


async def stop_worker(stop: asyncio.Event, task: asyncio.Task, timeout: float = 30.0) -> None:
    stop.set()
    await asyncio.wait_for(task, timeout=timeout)


async def time_runner_drain(
    js, spec, method: Method, *, database_url: str, stream: str, batch: int, count_sql: str,
    params: Sequence[object] = (), poll: float,
) -> float:  # fmt: skip
    """Seconds an eventbus ``ConsumerRunner`` for ``spec`` takes from its start until ``count_sql``
    counts ``method.events`` rows (its stream preloaded); then checks it left nothing
    unacknowledged on ``stream`` and nothing was redelivered."""
    from apps.eventbus.consuming.runner import ConsumerRunner
    from apps.eventbus.jetstream.provisioning import ensure_consumer
    from apps.eventbus.registry import registry

    # Consumers exist before their runners in production (nats_setup): created untimed.
    for stream, subjects in registry.streams_of(spec).items():
        await ensure_consumer(js, spec, stream, subjects)
    stop = asyncio.Event()
    runner = ConsumerRunner(spec, batch_size=batch)
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    try:
        finished = await wait_for_row_count(
            database_url, count_sql, params, method.events,
            interval=poll, timeout=timeout_for(method.events), worker=task,
        )  # fmt: skip
    finally:
        await stop_worker(stop, task)
    check(method, "messages left unacknowledged", await wait_until_settled(js, stream, spec.name), 0)
    check(method, "redeliveries", (await js.consumer_info(stream, spec.name)).num_redelivered, 0)
    return finished - started


# -- results --------------------------------------------------------------------------


@dataclass
class Method:
    """One way of doing the job, measured ``runs`` times."""

    name: str
    description: str
    events: int
    rates: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")


def check(method: Method, what: str, actual: int, expected: int) -> None:
    """A sanity check after a measurement: a mismatch is printed and noted under the table."""
    if actual != expected:
        note = f"{what}: {actual}, expected {expected}"
        method.notes.append(note)
        print(f"  WARNING ({method.name}): {note}", flush=True)


def measure_and_report(methods: Sequence[Method], runs: int, measure: Callable[[Method], float]) -> dict[str, float]:
    """Interleaved rounds, then the table of medians; returns method name -> median events/s."""
    print("Measuring (each method once per run, interleaved):", flush=True)
    run_rounds(methods, runs, measure)
    print()
    print_results(methods)
    return {method.name: method.median for method in methods}


def run_rounds(methods: Sequence[Method], runs: int, measure: Callable[[Method], float]) -> None:
    """Measure each method once per round, interleaved, so drift on a shared machine hits all alike.

    ``measure(method)`` prepares fresh state, runs the method and returns the timed seconds.
    """
    for run in range(1, runs + 1):
        for method in methods:
            seconds = measure(method)
            rate = method.events / seconds
            method.rates.append(rate)
            print(
                f"  run {run}/{runs}  {method.name:<16} {method.events:>7} events in {seconds:7.3f}s  "
                f"= {rate:>9,.0f} events/s",
                flush=True,
            )


def print_results(methods: Sequence[Method]) -> None:
    rows = [
        (
            method.name,
            f"{method.events:,}",
            f"{method.median:,.0f}",
            f"{min(method.rates):,.0f}" if method.rates else "-",
            f"{max(method.rates):,.0f}" if method.rates else "-",
            method.description,
        )
        for method in methods
    ]
    print_table(("method", "events/run", "events/s (median)", "min", "max", "what"), rows)
    for method in methods:
        for note in method.notes:
            print(f"  note ({method.name}): {note}")


def print_ratios(checks: Sequence[tuple[str, float, float]]) -> None:
    """``checks``: (label, ratio, target). PASS when ratio >= target; the exit code stays 0 either way."""
    print()
    rows = [
        (label, f"{ratio:.2f}", f">= {target:g}", "PASS" if ratio >= target else "FAIL")
        for label, ratio, target in checks
    ]
    print_table(("ratio", "value", "target", "verdict"), rows)
    passed = all(ratio >= target for _, ratio, target in checks)
    print(f"\nOVERALL: {'PASS' if passed else 'FAIL'} (a report, not a test: the exit code is 0 either way)")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    right = [False, *([True] * (len(headers) - 2)), False]  # numbers right-aligned, text left

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:>{width}}" if align else f"{cell:<{width}}"
            for cell, width, align in zip(cells, widths, right, strict=True)
        ).rstrip()

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


@contextlib.contextmanager
def report_interrupts() -> Iterator[None]:
    """Ctrl-C ends the benchmark quietly (the servers are stopped by their context manager)."""
    try:
        yield
    except KeyboardInterrupt:
        _say("interrupted")
        raise SystemExit(130) from None


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- whole-platform benchmarks (saga_throughput.py): percentiles, CPU by process, code state ----


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0-100) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def process_tree_cpu(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and all their descendants,
    including descendants that have exited (PostgreSQL's autovacuum workers, closed backends)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for member in members:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


def code_state() -> str:
    """The commit the working tree is on, and whether it has uncommitted changes (read-only git)."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    head = git("log", "--oneline", "-1") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head[:90]}{' (+ uncommitted changes)' if dirty else ''}"


async def fetch_ack_ceiling(
    nc, js, method: Method, *, stream: str, durable: str, subject: str, batch: int, ack_wait: float,
    max_ack_pending: int,
) -> float:  # fmt: skip
    """The best a consumer can do in this process: a durable pull consumer (created untimed) that
    fetches ``batch`` and acks each message, no other work, until ``method.events`` are acked.
    Returns the seconds from the first fetch to the last ack flushed to the server."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        filter_subject=subject,
    )
    await js.add_consumer(stream, config)
    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
    acked = 0
    started = time.perf_counter()
    while acked < method.events:
        try:
            messages = await subscription.fetch(batch, timeout=1.0)
        except (NatsTimeoutError, TimeoutError):
            continue
        for message in messages:
            await message.ack()
        acked += len(messages)
    await nc.flush()  # every ack has reached the server
    elapsed = time.perf_counter() - started
    outstanding = await wait_until_settled(js, stream, durable)
    check(method, "messages left unacknowledged", outstanding, 0)
    return elapsed
