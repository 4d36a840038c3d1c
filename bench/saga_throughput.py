"""Orders through the whole saga, every process running.

    .venv/bin/python bench/saga_throughput.py [--orders 2000] [--runs 3]

Starts its own durable PostgreSQL and nats-server, the payment gateway simulator and the
platform's processes as real child processes (the outbox relay and the inventory,
payments, orders and audit consumers, each ``manage.py runconsumer NAME``), then, per run,
places ``--orders`` orders with ``order_place`` as fast as one client can and measures:

  placing  orders/s accepted by order_place (the order and its event in one transaction)
  saga     orders/s from the first order placed to the last one CONFIRMED or CANCELLED

Every order must end CONFIRMED, charged exactly once for its total. The median of the runs
is reported. A report, not a test: the exit code is 0 unless an invariant breaks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import benchlib

ROOT = Path(__file__).resolve().parent.parent
CONSUMERS = ("outbox", "inventory", "payments", "orders", "audit")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per run (default 2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    return parser.parse_args()


def start_processes(servers: benchlib.PrivateServers, gateway_url: str) -> list[subprocess.Popen]:
    port = int(gateway_url.rsplit(":", 1)[1])
    env = {**os.environ, "PAYMENT_GATEWAY_URL": gateway_url, "LOG_LEVEL": "WARNING"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    ledger = servers.root / "gateway-ledger.jsonl"
    commands = [[*manage, "rungateway", "--port", str(port), "--ledger", str(ledger)]]
    commands += [[*manage, "runconsumer", name] for name in CONSUMERS]
    return [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in commands
    ]


def wait_ready(gateway_url: str) -> None:
    import httpx

    from orders_platform.embedded.procs import wait_until

    def gateway_up() -> bool:
        try:
            return httpx.get(f"{gateway_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(gateway_up, timeout=60):
        raise benchlib.BenchError("the gateway simulator did not start")
    time.sleep(5)  # the consumers connect and create their durables


def one_run(n: int, run: int) -> tuple[float, float]:
    from apps.orders.models import Order
    from apps.orders.services import order_place

    started = time.perf_counter()
    ids = [order_place(customer_id=f"bench-{run}", lines=[("BENCH-1", 1), ("BENCH-2", 2)]).pk for _ in range(n)]
    placed = time.perf_counter()
    deadline = placed + 600
    while Order.objects.filter(pk__in=ids, status="PENDING").exists():
        if time.perf_counter() > deadline:
            raise benchlib.BenchError("orders still PENDING after 10 minutes")
        time.sleep(0.2)
    finished = time.perf_counter()
    confirmed = Order.objects.filter(pk__in=ids, status="CONFIRMED").count()
    if confirmed != n:
        raise benchlib.BenchError(f"{n - confirmed} of {n} orders did not end CONFIRMED")
    return n / (placed - started), n / (finished - started)


def check_billing(gateway_url: str) -> None:
    import httpx

    from apps.orders.models import Order

    charges = httpx.get(f"{gateway_url}/v1/charges", timeout=30).json()["data"]
    by_order: dict[str, list[dict]] = {}
    for charge in charges:
        by_order.setdefault(charge["reference"], []).append(charge)
    totals = dict(Order.objects.values_list("id", "total_amount"))
    for order_id, total in totals.items():
        order_charges = by_order.get(str(order_id), [])
        if len(order_charges) != 1 or Decimal(order_charges[0]["amount"]) != total:
            raise benchlib.BenchError(f"order {order_id}: {len(order_charges)} charge(s), expected one of {total}")
    print(f"billing: {len(totals)} orders, each charged exactly once for its total")


def main() -> int:
    args = parse_args()
    with benchlib.report_interrupts(), benchlib.PrivateServers() as servers:
        benchlib.setup_django(servers)
        from apps.inventory.services import product_ensure
        from orders_platform.embedded.procs import free_port

        product_ensure(sku="BENCH-1", name="Bench one", price=Decimal("10.00"), stock_on_hand=10_000_000)
        product_ensure(sku="BENCH-2", name="Bench two", price=Decimal("2.50"), stock_on_hand=10_000_000)
        gateway_url = f"http://127.0.0.1:{free_port()}"
        params = {"Orders": f"{args.orders:,} per run, 2 lines each", "Runs": args.runs,
                  "Processes": f"gateway simulator + runconsumer {', '.join(CONSUMERS)}"}  # fmt: skip
        benchlib.print_facts("saga throughput", benchlib.environment_facts(servers, params))
        processes = start_processes(servers, gateway_url)
        try:
            wait_ready(gateway_url)
            placing, saga = [], []
            for run in range(1, args.runs + 1):
                place_rate, saga_rate = one_run(args.orders, run)
                placing.append(place_rate)
                saga.append(saga_rate)
                print(f"  run {run}/{args.runs}  placing {place_rate:8,.0f} orders/s   saga {saga_rate:8,.0f} orders/s")
            check_billing(gateway_url)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)
        print()
        benchlib.print_table(
            ["measure", "orders/s (median)", "min", "max"],
            [
                [name, f"{statistics.median(v):,.0f}", f"{min(v):,.0f}", f"{max(v):,.0f}"]
                for name, v in (("placing (order_place)", placing), ("whole saga", saga))
            ],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
