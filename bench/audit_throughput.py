"""Audit throughput: the platform's audit consumer against the client's ceiling on its own stream.

    .venv/bin/python bench/audit_throughput.py [--events 20000] [--runs 3] [--batch 500]

Starts its own durable PostgreSQL and nats-server (temporary, free ports) and measures,
``--runs`` times each with fresh state, the median reported:

  ceiling  a plain nats-py durable pull consumer on ORDERS: fetch(batch) + ack each, no other work
  audit    apps.eventbus.consuming.runner.ConsumerRunner(registry.consumer("audit")) in-process: every event
           appended to the hash-chained AuditEntry log + its ledger row, one transaction per
           batch, acks after commit (the consumer reads ORDERS, PAYMENTS, INVENTORY and OPERATOR)

The input is N minimal valid ``orders.created.v1`` bodies (the external producers' form),
``Nats-Msg-Id`` = their ``message_id``, preloaded untimed into ORDERS with pipelined publishes.
After each audit run: N entries, N distinct message ids, the whole chain verifies
(``apps.audit.chain.verify``), N ledger rows. See bench/README.md for how to read the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import benchlib
from benchlib import Method

STREAM, SUBJECT = "ORDERS", "orders.created.v1"
AUDIT_STREAMS = ("ORDERS", "PAYMENTS", "INVENTORY", "OPERATOR")  # what the audit consumer reads
CONSUMER, CEILING_CONSUMER = "audit", "bench-ceiling"
TARGET_VS_CEILING = 0.6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events per run (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each method; the median is reported (default 3)")
    parser.add_argument(
        "--batch", type=int, default=None, help="fetch batch of the ceiling and the runner (default: the audit spec's)"
    )
    parser.add_argument(
        "--poll", type=float, default=0.1, help="seconds between checks of the AuditEntry count (default 0.1)"
    )
    parser.add_argument(
        "--methods", default="ceiling,audit", help="comma-separated subset of ceiling,audit (default: both)"
    )
    args = parser.parse_args()
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = set(args.methods) - {"ceiling", "audit"}
    if unknown or args.events < 1 or args.runs < 1 or (args.batch is not None and args.batch < 1):
        parser.error(f"bad arguments{f': unknown methods {sorted(unknown)}' if unknown else ''}")
    return args


def minimal_order_created(index: int) -> tuple[str, bytes]:
    """(message_id, body) in the minimal external form of ``orders.created.v1``."""
    message_id = str(uuid.uuid4())
    body = {
        "message_id": message_id,
        "order_id": f"bench-order-{index}",
        "customer_id": f"bench-customer-{index % 997}",
        "total_amount": 99.95,
        "created_at": 1764000000000 + index,
    }
    return message_id, json.dumps(body).encode()


class AuditBench:
    """The two methods, each preceded by fresh state: streams recreated, tables truncated."""

    def __init__(self, servers: benchlib.PrivateServers, args: argparse.Namespace) -> None:
        from apps.audit.models import AuditEntry
        from apps.eventbus.models import ProcessedMessage
        from apps.eventbus.registry import registry
        from apps.orders.events import OrderCreated

        self.servers, self.args = servers, args
        self.AuditEntry, self.ProcessedMessage = AuditEntry, ProcessedMessage
        self.spec = registry.consumer(CONSUMER)
        self.batch = args.batch or self.spec.setting("BATCH_SIZE")
        self.filters = registry.streams_of(self.spec)  # stream -> filter subjects (with the redelivery subject)
        if set(self.filters) != set(AUDIT_STREAMS):
            raise benchlib.BenchError(f"the audit consumer reads {sorted(self.filters)}, expected {AUDIT_STREAMS}")
        self.messages = []
        for index in range(args.events):
            message_id, body = minimal_order_created(index)
            self.messages.append((SUBJECT, body, {"Nats-Msg-Id": message_id}))
        OrderCreated.model_validate_json(self.messages[0][1])  # the bodies are valid events
        self.count_sql = f'SELECT count(*) FROM "{AuditEntry._meta.db_table}"'
        self.measures = {"ceiling": self.ceiling, "audit": self.audit}

    # -- driver ------------------------------------------------------------------------

    def methods(self) -> list[Method]:
        described = {
            "ceiling": Method("ceiling", f"nats-py pull fetch({self.batch}) + ack each, no work", self.args.events),
            "audit": Method(
                "audit",
                f"ConsumerRunner(audit), batch {self.batch}: 1 chained AuditEntry + 1 ledger row per event, "
                "1 commit per batch",
                self.args.events,
            ),
        }
        return [described[name] for name in self.args.methods]

    def run(self) -> None:
        results = benchlib.measure_and_report(self.methods(), self.args.runs, self.measure)
        if {"ceiling", "audit"} <= results.keys():
            benchlib.print_ratios([("audit / ceiling", results["audit"] / results["ceiling"], TARGET_VS_CEILING)])

    def measure(self, method: Method) -> float:
        """Fresh tables, then the method (which recreates the streams and preloads ORDERS); checks after."""
        benchlib.truncate(self.AuditEntry, self.ProcessedMessage)
        seconds = asyncio.run(self.measures[method.name](method))
        if method.name == "audit":
            self.check_log(method)
        return seconds

    async def prepare(self, js) -> None:
        """Recreate every stream the audit consumer reads (dropping its consumers), preload ORDERS."""
        for stream in AUDIT_STREAMS:
            await benchlib.reset_stream(js, stream)
        await benchlib.preload(js, STREAM, self.messages)

    # -- 1. ceiling --------------------------------------------------------------------

    async def ceiling(self, method: Method) -> float:
        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.prepare(js)
            return await benchlib.fetch_ack_ceiling(
                nc, js, method, stream=STREAM, durable=CEILING_CONSUMER, subject="orders.>", batch=self.batch,
                ack_wait=float(self.spec.setting("ACK_WAIT")), max_ack_pending=self.spec.setting("MAX_ACK_PENDING"),
            )  # fmt: skip

    # -- 2. the audit consumer ---------------------------------------------------------

    async def audit(self, method: Method) -> float:
        async with benchlib.nats_client(self.servers.nats.url) as nc:
            js = nc.jetstream()
            await self.prepare(js)
            return await benchlib.time_runner_drain(
                js, self.spec, method, database_url=self.servers.database_url, stream=STREAM, batch=self.batch,
                count_sql=self.count_sql, poll=self.args.poll,
            )  # fmt: skip

    # -- checks ------------------------------------------------------------------------

    def check_log(self, method: Method) -> None:
        """N entries, one per event, a chain that verifies from the first entry, N ledger rows."""
        from apps.audit.chain import verify

        entries = self.AuditEntry.objects.all()
        benchlib.check(method, "AuditEntry rows", entries.count(), method.events)
        benchlib.check(method, "distinct message ids", entries.values("message_id").distinct().count(), method.events)
        checked, broken = verify(entries.order_by("id").iterator(chunk_size=2000))
        benchlib.check(method, "entries verified before a chain break" if broken else "entries verified", checked,
                       method.events)  # fmt: skip
        if broken is not None:
            benchlib.check(method, f"chain break at entry {broken.entry_id} ({broken.reason})", 1, 0)
        ledger = self.ProcessedMessage.objects.filter(consumer=CONSUMER).count()
        benchlib.check(method, "ledger rows", ledger, method.events)


def main() -> int:
    args = parse_args()
    with benchlib.report_interrupts(), benchlib.PrivateServers() as servers:
        benchlib.setup_django(servers)
        bench = AuditBench(servers, args)
        params = {
            "Events": f"{args.events:,} minimal orders.created.v1 per run, preloaded into ORDERS (untimed)",
            "Runs": f"{args.runs} of each method, interleaved; median reported",
            "Batch": f"{bench.batch} (ceiling fetch and runner batch)",
            "Consumers": f"ack_wait {bench.spec.setting('ACK_WAIT')}s, "
            f"max_ack_pending {bench.spec.setting('MAX_ACK_PENDING'):,} (the audit spec's)",
            "Timing": f"perf_counter; audit end = first AuditEntry-count poll at N (every {args.poll}s)",
        }
        benchlib.print_facts("audit throughput", benchlib.environment_facts(servers, params))
        bench.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
