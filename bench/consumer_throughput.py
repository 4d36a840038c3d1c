"""Consumer throughput: the eventbus ConsumerRunner against the client's ceiling and the naive pattern.

    .venv/bin/python bench/consumer_throughput.py [--events 50000] [--runs 3] [--batch 500]

Starts its own durable PostgreSQL and nats-server (temporary, free ports) and measures,
``--runs`` times each with fresh state, the median reported:

  ceiling  a plain nats-py pull loop: fetch(batch) + ack each message, no other work
  runner   apps.eventbus.consuming.runner.ConsumerRunner: one Effect row per event (a @batch_handler that
           bulk-inserts the batch's rows) + the ledger rows,
           one transaction per batch, acks after commit
  naive    one push subscription; per message one ORM insert in its own transaction
           (autocommit, through sync_to_async), then ack

See bench/README.md for how to read the report.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import benchlib
from benchlib import Method

STREAM, SUBJECT = "TESTING", "testing.happened.v1"  # declared by the test app (tests/testapp/consumers.py)
RUNNER_CONSUMER, CEILING_CONSUMER, NAIVE_CONSUMER = "bench", "bench-ceiling", "bench-naive"
ACK_WAIT = 60
MAX_ACK_PENDING = 20_000
TARGET_VS_CEILING, TARGET_VS_NAIVE = 0.5, 10.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="events per run (default 50000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each method; the median is reported (default 3)")
    parser.add_argument("--batch", type=int, default=500, help="fetch batch size of the ceiling and the runner")
    parser.add_argument(
        "--naive-events",
        type=int,
        default=5_000,
        help="events per run of the naive baseline, at most --events (default 5000; it is slow)",
    )
    parser.add_argument(
        "--handler",
        choices=("orm", "sql"),
        default="sql",
        help="how the runner's batch handler inserts its rows: Django bulk_create (orm) or one SQL insert (sql)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.1, help="seconds between checks of the Effect count (default 0.1)"
    )
    parser.add_argument(
        "--methods",
        default="ceiling,runner,naive",
        help="comma-separated subset of ceiling,runner,naive (default: all; the ratios need all three)",
    )
    args = parser.parse_args()
    args.naive_events = min(args.naive_events, args.events)
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = set(args.methods) - {"ceiling", "runner", "naive"}
    if unknown or args.events < 1 or args.runs < 1 or args.batch < 1:
        parser.error(f"bad arguments{f': unknown methods {sorted(unknown)}' if unknown else ''}")
    return args


class ConsumerBench:
    """The three methods, each preceded by fresh state: stream recreated, tables truncated."""

    def __init__(self, servers: benchlib.PrivateServers, args: argparse.Namespace) -> None:
        from apps.eventbus.models import ProcessedMessage
        from apps.eventbus.registry import ConsumerSpec, batch_handler, registry
        from tests.testapp.events import SomethingHappened
        from tests.testapp.models import Effect

        self.servers, self.args = servers, args
        self.Effect, self.ProcessedMessage, self.contract = Effect, ProcessedMessage, SomethingHappened
        self.spec = registry.register_consumer(
            ConsumerSpec(
                RUNNER_CONSUMER,
                handlers={SUBJECT: batch_handler(self.make_handler())},
                description="Benchmark: one Effect row per event",
                ack_wait=ACK_WAIT,
                max_ack_pending=MAX_ACK_PENDING,
            )
        )
        events = [SomethingHappened(value=index) for index in range(args.events)]
        self.messages = [(SUBJECT, event.to_json(), {"Nats-Msg-Id": event.message_id}) for event in events]
        self.effect_count_sql = f'SELECT count(*) FROM "{Effect._meta.db_table}" WHERE consumer = %s'
        self.measures = {"ceiling": self.ceiling, "runner": self.runner, "naive": self.naive}

    # -- the handler the runner calls (in its worker thread, inside the batch's transaction) --

    def make_handler(self):
        """One Effect row per event, written once per batch (a @batch_handler): with the ORM's
        ``bulk_create`` (``--handler orm``, the idiomatic Django handler) or one
        ``INSERT ... SELECT unnest(...)`` (``--handler sql``, which leaves the runner's own cost)."""
        from django.db import connection

        Effect = self.Effect
        insert = (
            f'INSERT INTO "{Effect._meta.db_table}" (consumer, message_id, subject, value, created_at) '
            "SELECT %s, m, %s, v, now() FROM unnest(%s::text[], %s::int[]) AS t(m, v)"
        )

        if self.args.handler == "sql":

            def on_happened(events) -> None:
                with connection.cursor() as cursor:
                    cursor.execute(
                        insert,
                        [RUNNER_CONSUMER, SUBJECT, [e.message_id for e in events], [e.value for e in events]],
                    )

            return on_happened

        def on_happened(events) -> None:
            Effect.objects.bulk_create(
                Effect(consumer=RUNNER_CONSUMER, message_id=e.message_id, subject=e.subject, value=e.value)
                for e in events
            )

        return on_happened

    # -- driver ------------------------------------------------------------------------

    def methods(self) -> list[Method]:
        args = self.args
        described = {
            "ceiling": Method("ceiling", f"nats-py pull fetch({args.batch}) + ack each, no work", args.events),
            "runner": Method(
                "runner",
                f"eventbus ConsumerRunner, batch {args.batch}: 1 Effect + 1 ledger row per event "
                f"({args.handler} batch handler), 1 commit per batch",
                args.events,
            ),
            "naive": Method(
                "naive",
                "push subscription, 1 ORM insert + commit per message via sync_to_async, then ack",
                args.naive_events,
            ),
        }
        return [described[name] for name in args.methods]

    def run(self) -> None:
        results = benchlib.measure_and_report(self.methods(), self.args.runs, self.measure)
        if {"ceiling", "runner", "naive"} <= results.keys():
            benchlib.print_ratios(
                [
                    ("runner / ceiling", results["runner"] / results["ceiling"], TARGET_VS_CEILING),
                    ("runner / naive", results["runner"] / results["naive"], TARGET_VS_NAIVE),
                ]
            )

    def measure(self, method: Method) -> float:
        """Fresh tables, then the method (which recreates the stream and preloads it); checks after."""
        benchlib.truncate(self.Effect, self.ProcessedMessage)
        seconds = asyncio.run(self.measures[method.name](method))
        if method.name in ("runner", "naive"):
            self.check_rows(method)
        return seconds

    async def prepare(self, js, events: int) -> None:
        """Recreate the stream, preload ``events`` messages (pipelined, not timed)."""
        await benchlib.reset_stream(js, STREAM)
        await benchlib.preload(js, STREAM, self.messages[:events])

    # -- 1. ceiling --------------------------------------------------------------------

    async def ceiling(self, method: Method) -> float:
        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.prepare(js, method.events)
            return await benchlib.fetch_ack_ceiling(
                nc, js, method, stream=STREAM, durable=CEILING_CONSUMER, subject=SUBJECT, batch=self.args.batch,
                ack_wait=ACK_WAIT, max_ack_pending=MAX_ACK_PENDING,
            )  # fmt: skip

    # -- 2. the eventbus runner --------------------------------------------------------

    async def runner(self, method: Method) -> float:
        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.prepare(js, method.events)
            return await benchlib.time_runner_drain(
                js, self.spec, method, database_url=self.servers.database_url, stream=STREAM, batch=self.args.batch,
                count_sql=self.effect_count_sql, params=[RUNNER_CONSUMER], poll=self.args.poll,
            )  # fmt: skip

    # -- 3. naive ----------------------------------------------------------------------

    async def naive(self, method: Method) -> float:
        from asgiref.sync import sync_to_async
        from nats.js.api import AckPolicy, ConsumerConfig

        insert = sync_to_async(self._insert_naive_effect)  # thread_sensitive: one shared worker thread

        async def on_message(message) -> None:
            event = self.contract.model_validate_json(message.data)
            await insert(event)  # autocommit: its own transaction, one fsync per message
            await message.ack()

        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.prepare(js, method.events)
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_ack_pending=MAX_ACK_PENDING)
            started = time.perf_counter()
            subscription = await js.subscribe(
                SUBJECT, durable=NAIVE_CONSUMER, stream=STREAM, cb=on_message, manual_ack=True, config=config
            )
            try:
                finished = await benchlib.wait_for_row_count(
                    self.servers.database_url,
                    self.effect_count_sql,
                    ["naive"],
                    method.events,
                    interval=self.args.poll,
                    timeout=benchlib.timeout_for(method.events, slowest_rate=50),
                )
            finally:
                await subscription.unsubscribe()
                await nc.flush()
        return finished - started

    def _insert_naive_effect(self, event) -> None:
        self.Effect.objects.create(
            consumer="naive", message_id=event.message_id, subject=event.subject, value=event.value
        )

    # -- checks ------------------------------------------------------------------------

    def check_rows(self, method: Method) -> None:
        """Exactly one effect per event (and, for the runner, one ledger row per event)."""
        consumer = RUNNER_CONSUMER if method.name == "runner" else "naive"
        effects = self.Effect.objects.filter(consumer=consumer)
        benchlib.check(method, "Effect rows", effects.count(), method.events)
        benchlib.check(method, "distinct message ids", effects.values("message_id").distinct().count(), method.events)
        if method.name == "runner":
            ledger = self.ProcessedMessage.objects.filter(consumer=consumer).count()
            benchlib.check(method, "ledger rows", ledger, method.events)


def main() -> int:
    args = parse_args()
    with benchlib.report_interrupts(), benchlib.PrivateServers() as servers:
        benchlib.setup_django(servers)
        bench = ConsumerBench(servers, args)
        params = {
            "Events": f"{args.events:,} per run (naive baseline: {args.naive_events:,}; rates are comparable)",
            "Runs": f"{args.runs} of each method, interleaved; median reported",
            "Batch": f"{args.batch} (ceiling fetch and runner batch)",
            "Consumers": f"ack_wait {ACK_WAIT}s, max_ack_pending {MAX_ACK_PENDING:,}",
            "Naive ORM call": "sync_to_async (thread_sensitive, default), autocommit: one transaction per message",
            "Timing": f"perf_counter; runner/naive end = first Effect-count poll at N (every {args.poll}s)",
        }
        benchlib.print_facts("consumer throughput", benchlib.environment_facts(servers, params))
        bench.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
