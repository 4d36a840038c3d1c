"""Relay throughput: the outbox relay against a raw pipelined publish loop.

    .venv/bin/python bench/relay_throughput.py [--events 50000] [--runs 3] [--batch 500]

Starts its own durable PostgreSQL and nats-server (temporary, free ports) and measures,
``--runs`` times each with fresh state, the median reported:

  relay  apps.eventbus.producing.relay.Relay(batch_size=B, poll_interval=0.2), started and idle, from
         the commit of N outbox rows (one transaction, as a burst of orders arrives) until
         every row has sent_at set
  raw    the same N bodies and headers published with js.publish_async, pipelined in windows
         (every future awaited), straight from memory

See bench/README.md for how to read the report.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import benchlib
from benchlib import Method

STREAM = "TESTING"  # captures testing.> (declared by the test app, tests/testapp/consumers.py)
TARGET_VS_RAW = 0.7


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="outbox rows / messages per run (default 50000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each method; the median is reported (default 3)")
    parser.add_argument(
        "--batch", type=int, default=1000, help="the relay's batch size (default 1000, as the platform)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="the relay's workers: rounds in flight at once (default 2, as the platform)",
    )
    parser.add_argument(
        "--window", type=int, default=benchlib.PUBLISH_WINDOW, help="raw baseline: publishes in flight (default 2000)"
    )
    parser.add_argument(
        "--per-aggregate",
        type=int,
        default=1,
        help="consecutive events per aggregate (default 1: every event its own aggregate). The relay publishes "
        "the n-th event of each aggregate in a batch in its n-th wave, so K > 1 cuts its pipelining K ways",
    )
    parser.add_argument(
        "--prepare",
        choices=("bulk", "outbox_write"),
        default="bulk",
        help="how the untimed preparation writes the rows (one transaction, committed when the clock starts): "
        "bulk_create of rows built as outbox_write builds them (default, fast), or outbox_write itself, one call "
        "per event",
    )
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between checks of the unsent count")
    parser.add_argument("--methods", default="relay,raw", help="comma-separated subset of relay,raw (default: both)")
    args = parser.parse_args()
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = set(args.methods) - {"relay", "raw"}
    if unknown or min(args.events, args.runs, args.batch, args.workers, args.window, args.per_aggregate) < 1:
        parser.error(f"bad arguments{f': unknown methods {sorted(unknown)}' if unknown else ''}")
    return args


class RelayBench:
    def __init__(self, servers: benchlib.PrivateServers, args: argparse.Namespace) -> None:
        from apps.eventbus.headers import NATS_MSG_ID as H_MSG_ID
        from apps.eventbus.models import OutboxEvent
        from tests.testapp.events import SomethingHappened

        self.servers, self.args = servers, args
        self.OutboxEvent = OutboxEvent
        # correlation_id is what outbox_write takes as the aggregate when none is given.
        self.events = [
            SomethingHappened(value=index, correlation_id=f"order-{index // args.per_aggregate}")
            for index in range(args.events)
        ]
        self.messages = [
            (row.subject, row.body.encode(), {**row.headers, H_MSG_ID: row.message_id}) for row in self.build_rows()
        ]
        # 1 while any row is unsent, else 0: stops at the first unsent row, so polling often
        # costs the database next to nothing (a count of the backlog would not).
        table = OutboxEvent._meta.db_table
        self.unsent_sql = f'SELECT count(*) FROM (SELECT 1 FROM "{table}" WHERE sent_at IS NULL LIMIT 1) AS s'
        self.measures = {"relay": self.relay, "raw": self.raw}

    # -- preparing the outbox (untimed) ------------------------------------------------

    def build_rows(self) -> list:
        """Outbox rows exactly as ``outbox_write`` builds them (it also re-validates each event)."""
        from apps.eventbus.producing.outbox import wire_headers
        from apps.eventbus.tracing import current_context_headers

        return [
            self.OutboxEvent(
                message_id=event.message_id,
                subject=event.subject,
                aggregate_id=event.correlation_id or event.message_id,
                body=event.to_json().decode(),
                headers={
                    **wire_headers(event.subject),
                    "Event-Version": str(event.contract_version()),
                    **current_context_headers(),
                },
            )
            for event in self.events
        ]

    def fill_outbox(self) -> tuple[float, float]:
        """Write the N rows in one transaction, with the NOTIFY ``outbox_write`` sends, so a
        running relay sees them all at the commit. Return (seconds spent writing, perf_counter
        when the commit returned)."""
        from django.db import connection, transaction

        from apps.eventbus.producing.outbox import NOTIFY_CHANNEL, outbox_write

        started = time.perf_counter()
        with transaction.atomic():
            if self.args.prepare == "outbox_write":
                for event in self.events:
                    outbox_write(event)
            else:
                self.OutboxEvent.objects.bulk_create(self.build_rows(), batch_size=5_000)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
            written = time.perf_counter()
        committed = time.perf_counter()
        connection.close()  # this worker thread's own connection
        return written - started, committed

    # -- driver ------------------------------------------------------------------------

    def methods(self) -> list[Method]:
        args = self.args
        described = {
            "relay": Method(
                "relay",
                f"eventbus Relay, batch {args.batch}, {args.workers} workers: "
                "claim, publish pipelined, mark sent, commit",
                args.events,
            ),
            "raw": Method(
                "raw", f"js.publish_async from memory, {args.window} in flight, all acks awaited", args.events
            ),
        }
        return [described[name] for name in args.methods]

    def run(self) -> None:
        results = benchlib.measure_and_report(self.methods(), self.args.runs, self.measure)
        if {"relay", "raw"} <= results.keys():
            benchlib.print_ratios([("relay / raw", results["relay"] / results["raw"], TARGET_VS_RAW)])

    def measure(self, method: Method) -> float:
        if method.name == "relay":
            benchlib.truncate(self.OutboxEvent)
        seconds = asyncio.run(self.measures[method.name](method))
        if method.name == "relay":
            self.check_rows(method)
        return seconds

    async def fresh_streams(self, js) -> None:
        """The benchmark's stream recreated empty; every declared stream exists (as after nats_setup)."""
        from apps.eventbus.jetstream.provisioning import ensure_stream
        from apps.eventbus.registry import registry

        await benchlib.reset_stream(js, STREAM)
        for spec in registry.streams.values():
            await ensure_stream(js, spec)

    # -- 1. the relay ------------------------------------------------------------------

    async def relay(self, method: Method) -> float:
        """The relay runs (connected, streams checked, LISTENing) before the rows arrive, as in
        production; the clock runs from their commit to the poll that finds none unsent. The
        raw loop's clock likewise excludes its connection and stream checks."""
        from apps.eventbus.producing.relay import Relay

        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.fresh_streams(js)
            stop = asyncio.Event()
            relay = Relay(batch_size=self.args.batch, poll_interval=0.2, workers=self.args.workers)
            task = asyncio.create_task(relay.run(stop))
            try:
                await benchlib.wait_for_row_count(
                    self.servers.database_url,
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'",
                    [],
                    1,
                    interval=0.05,
                    timeout=60,
                    worker=task,
                )
                seconds, started = await asyncio.to_thread(self.fill_outbox)
                print(
                    f"  (wrote {method.events:,} outbox rows with {self.args.prepare} in {seconds:.2f}s, one "
                    "transaction, while the relay waited; untimed)",
                    flush=True,
                )
                finished = await benchlib.wait_for_row_count(
                    self.servers.database_url,
                    self.unsent_sql,
                    [],
                    0,
                    interval=self.args.poll,
                    timeout=benchlib.timeout_for(method.events),
                    worker=task,
                    compare=lambda unsent, target: unsent <= target,
                )
            finally:
                await benchlib.stop_worker(stop, task)
            benchlib.check(method, "messages in the stream", await benchlib.stream_messages(js, STREAM), method.events)
        return finished - started

    # -- 2. raw pipelined publishing ---------------------------------------------------

    async def raw(self, method: Method) -> float:
        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.fresh_streams(js)
            started = time.perf_counter()
            await benchlib.publish_pipelined(js, self.messages, window=self.args.window)
            elapsed = time.perf_counter() - started
            benchlib.check(method, "messages in the stream", await benchlib.stream_messages(js, STREAM), method.events)
        return elapsed

    # -- checks ------------------------------------------------------------------------

    def check_rows(self, method: Method) -> None:
        rows = self.OutboxEvent.objects
        benchlib.check(method, "rows marked sent", rows.filter(sent_at__isnull=False).count(), method.events)
        benchlib.check(
            method, "rows with a stream sequence", rows.filter(stream_sequence__isnull=False).count(), method.events
        )


def main() -> int:
    args = parse_args()
    with benchlib.report_interrupts(), benchlib.PrivateServers() as servers:
        benchlib.setup_django(servers)
        bench = RelayBench(servers, args)
        aggregates = -(-args.events // args.per_aggregate)
        params = {
            "Events": f"{args.events:,} per run, {aggregates:,} aggregate(s) of up to {args.per_aggregate} event(s)",
            "Runs": f"{args.runs} of each method, interleaved; median reported",
            "Batch": f"{args.batch} (relay, {args.workers} workers); raw window {args.window}",
            "Preparation": f"{args.prepare}, one transaction committed while the relay waits (untimed)",
            "Timing": f"perf_counter; relay: from that commit to the first unsent-count poll at 0 (every {args.poll}s)",
        }
        benchlib.print_facts("relay throughput", benchlib.environment_facts(servers, params))
        bench.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
