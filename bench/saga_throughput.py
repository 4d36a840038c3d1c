"""Orders through the whole saga, placed through the real front door, every process running.

    .venv/bin/python bench/saga_throughput.py [--scenarios a,b,c,d,e] [--runs 3] [--orders 2000] ...

Starts its own durable PostgreSQL and nats-server, migrates (``manage.py migrate``), runs
``manage.py nats_setup``, seeds two products with huge stock, then starts as real child
processes, every one with production settings (``orders_platform.settings.production``):

  gateway   ``manage.py rungateway`` (the payment provider simulator; its latency is set per
            scenario with ``PUT /_control``)
  web       gunicorn, as docker/Dockerfile runs it (sync workers, ``--web-workers``), with
            ``bench.web.settings``: production settings plus the baseline endpoint
            ``POST /bench/plain-orders/`` (a plain DRF create of the same rows, no event, no
            ``Idempotency-Key``), so both endpoints are served by the same workers
  relay     ``manage.py runrelay``
  consumers ``manage.py runconsumer inventory|payments|orders|audit``, ``--replicas`` each
            (replicas share the durable consumer)

Orders are placed with ``POST /api/orders/`` (token auth, a unique ``Idempotency-Key`` each)
by a separate load-generator process (``bench/loadgen.py``; loopback, bounded in count and
time). The API's throttles are raised for the benchmark (``API_THROTTLE_*``). Scenarios:

  a  provider 0 ms, closed loop (``--clients``): whole-saga orders/s (target >= 300)
  b  provider ``--latency-ms`` (200), closed loop: whole-saga orders/s, ratio to (a) (>= 0.8)
  c  open loop at ``--rate`` (100) orders/s, provider 0 ms and 200 ms: p50/p95/p99 of
     placed -> decided (``decided_at - created_at`` from the database; p99 <= 250 / 450 ms)
  d  payments x1 vs x2 replicas, ``PAYMENT_GATEWAY_CONCURRENCY=4`` each, provider 200 ms:
     ratio x2/x1 (>= 1.7); payments is suspended while the orders are placed and the drain
     is timed from its resumption to the last decision, so payments alone sets the pace
  e  intake of ``POST /api/orders/`` over the plain DRF create (>= 0.85), both closed loop,
     with the relay and consumers suspended (SIGSTOP) while it is measured, as if they ran
     on other hosts (``--intake-downstream running`` keeps them running)

Each run places orders as a user of its own (``customer_id`` is the user), so only that run's
orders are counted. The scenarios are interleaved (round 1 of each, round 2 of each...);
medians (min-max) are reported. After every run the invariants are checked, a ``WARNING``
printed when one breaks: each CONFIRMED order charged exactly once for its total, each
CANCELLED order net zero, no order left PENDING, audit entries unique per event and the hash
chain verified (incrementally: every entry once). A report, not a test: the exit code is 0
unless the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import benchlib

ROOT = benchlib.ROOT
CONSUMERS = ("inventory", "payments", "orders", "audit")
SCENARIOS = ("a", "b", "c", "d", "e")
PRODUCTION_SETTINGS = "orders_platform.settings.production"
WEB_SETTINGS = "bench.web.settings"
ORDER_LINES = (("BENCH-1", 1), ("BENCH-2", 2))
PRODUCTS = (("BENCH-1", "Bench one", Decimal("10.00")), ("BENCH-2", "Bench two", Decimal("2.50")))
STOCK = 1_000_000_000
# The API's throttles, raised for the benchmark (defaults: user 1200/minute, token 10/minute).
THROTTLES = {"API_THROTTLE_USER": "100000000/minute", "API_THROTTLE_TOKEN": "100000/minute"}
FORWARDED = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating load balancer production expects
TARGETS = {"a": 300.0, "b": 0.8, "c0": 0.250, "c200": 0.450, "d": 1.7, "e": 0.85}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of a,b,c,d,e (default all)")
    add("--runs", type=int, default=3, help="rounds; each scenario once per round, medians reported (default 3)")
    add("--orders", type=int, default=2000, help="orders per closed-loop run of (a), (b) and (e) (default 2000)")
    add("--clients", type=int, default=32, help="concurrent HTTP clients of the closed loop (default 32)")
    add("--rate", type=float, default=100.0, help="offered orders/s of the open loop (c) (default 100)")
    add("--open-orders", type=int, default=1500, help="orders per open-loop run (c) (default 1500)")
    add("--latency-ms", type=int, default=200, help="the slow provider's latency in (b), (c), (d) (default 200)")
    add(
        "--scaling-orders",
        type=int,
        default=400,
        help="orders per run of (d) (default 400); keep it well above payments batch (100) x replicas, "
        "or one replica fetches the whole backlog",
    )
    add("--scaling-concurrency", type=int, default=4, help="PAYMENT_GATEWAY_CONCURRENCY in (d) (default 4)")
    add("--replicas", default="", help="replicas per consumer, e.g. payments=3,orders=2 (default 1 each)")
    add("--web-workers", type=int, default=3, help="gunicorn workers (default 3: the image's WEB_CONCURRENCY)")
    add("--web-threads", type=int, default=1, help="gunicorn threads per worker; >1 uses gthread (default 1: sync)")
    add("--loadgens", type=int, default=1, help="load-generator processes sharing the clients/rate (default 1)")
    add(
        "--intake-downstream",
        choices=("stopped", "running"),
        default="stopped",
        help="(e): relay and consumers suspended while intake is measured (default) or running",
    )
    add("--settle-timeout", type=float, default=300.0, help="seconds a run's orders may stay PENDING (default 300)")
    add("--summary-json", type=Path, default=None, help="also write the final table here (for bench/run_all.py)")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    args.replicas = parse_replicas(parser, args.replicas)
    for name in ("runs", "orders", "clients", "open_orders", "scaling_orders", "web_workers", "web_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= args.loadgens <= args.clients:
        parser.error("--loadgens must be between 1 and --clients")
    return args


def parse_replicas(parser: argparse.ArgumentParser, text: str) -> dict[str, int]:
    replicas = dict.fromkeys(CONSUMERS, 1)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if name not in replicas or not count.isdigit() or int(count) < 1:
            parser.error(f"--replicas: expected NAME=N with NAME one of {', '.join(CONSUMERS)}; got {item!r}")
        replicas[name] = int(count)
    return replicas


# -- the platform's processes -----------------------------------------------------------


class Platform:
    """Every process of the platform, as child processes with production settings."""

    def __init__(self, servers: benchlib.PrivateServers, args: argparse.Namespace) -> None:
        from orders_platform.embedded.procs import free_port

        self.servers, self.args = servers, args
        self.logs = servers.root / "logs"
        self.logs.mkdir()
        self.gateway_port, self.web_port = free_port(), free_port()
        for port in (self.gateway_port, self.web_port):
            if port in benchlib.SYSTEM_PORTS or port in (5672, 6379):
                raise benchlib.BenchError(f"refusing to use port {port}")
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": PRODUCTION_SETTINGS,
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": servers.database_url,
            "NATS_URL": servers.nats.url,
            "CELERY_BROKER_URL": f"filesystem://{servers.root / 'celery'}",  # nothing here enqueues a task
            "PAYMENT_GATEWAY_URL": self.gateway_url,
            "PLATFORM_DATA_DIR": str(servers.root / "data"),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
            **THROTTLES,
        }
        self.env.pop("TEST_DATABASE_URL", None)
        self.env.pop("PAYMENT_GATEWAY_CONCURRENCY", None)  # set per process group below
        self.groups: dict[str, list[subprocess.Popen]] = {}
        self.payments_config: tuple[int, int | None] | None = None  # (replicas, concurrency)

    # set-up ------------------------------------------------------------------------

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise benchlib.BenchError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def prepare(self) -> None:
        """migrate and nats_setup as production runs them; Django in this process for the checks."""
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("nats_setup")
        os.environ.update(self.env)
        os.environ["DJANGO_SETTINGS_MODULE"] = WEB_SETTINGS
        import django

        django.setup()
        from apps.inventory.services import product_ensure

        for sku, name, price in PRODUCTS:
            product_ensure(sku=sku, name=name, price=price, stock_on_hand=STOCK)

    # processes ---------------------------------------------------------------------

    def spawn(self, group: str, command: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        index = len(self.groups.get(group, []))
        log = (self.logs / f"{group}-{index}-{int(time.time())}.log").open("ab")
        env = {**self.env, **(extra_env or {})}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        process.log_path = Path(log.name)  # type: ignore[attr-defined]
        log.close()
        self.groups.setdefault(group, []).append(process)
        return process

    def start(self) -> None:
        manage = [sys.executable, str(ROOT / "manage.py")]
        ledger = self.servers.root / "gateway-ledger.jsonl"
        self.spawn("gateway", [*manage, "rungateway", "--port", str(self.gateway_port), "--ledger", str(ledger)])
        self.spawn("web", self.web_command(), {"DJANGO_SETTINGS_MODULE": WEB_SETTINGS})
        self.spawn("relay", [*manage, "runrelay"])
        for name in CONSUMERS:
            if name != "payments":
                for _ in range(self.args.replicas[name]):
                    self.spawn(name, [*manage, "runconsumer", name])
        self.payments(self.args.replicas["payments"], None, wait=False)

    def web_command(self) -> list[str]:
        """docker/Dockerfile's CMD, on loopback, its access log to a file; workers as WEB_CONCURRENCY."""
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "orders_platform.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.web_port}",
            "--workers",
            str(self.args.web_workers),
            "--worker-tmp-dir",
            "/dev/shm",
            "--no-control-socket",
            "--access-logfile",
            str(self.logs / "web-access.log"),
        ]
        if self.args.web_threads > 1:
            command += ["--threads", str(self.args.web_threads)]
        return command

    def payments(self, replicas: int, concurrency: int | None, *, wait: bool = True) -> None:
        """Run ``replicas`` payments processes (``PAYMENT_GATEWAY_CONCURRENCY`` = ``concurrency``
        when given); restarts the group only when that changes."""
        if self.payments_config == (replicas, concurrency):
            return
        self.stop_group("payments")
        extra = {"PAYMENT_GATEWAY_CONCURRENCY": str(concurrency)} if concurrency is not None else {}
        for _ in range(replicas):
            self.spawn("payments", [sys.executable, str(ROOT / "manage.py"), "runconsumer", "payments"], extra)
        self.payments_config = (replicas, concurrency)
        if wait:
            self.wait_consumers({"payments": replicas})

    def stop_group(self, group: str, timeout: float = 30.0) -> None:
        processes = self.groups.pop(group, [])
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def close(self) -> None:
        for group in ["relay", *CONSUMERS, "web", "gateway"]:
            self.stop_group(group)
        for group in list(self.groups):
            self.stop_group(group)

    def downstream(self) -> list[subprocess.Popen]:
        return [process for group in ("relay", *CONSUMERS) for process in self.groups.get(group, [])]

    def signal_group(self, group: str, sig: int) -> None:
        for process in self.groups.get(group, []):
            process.send_signal(sig)

    def suspend_downstream(self) -> None:
        for process in self.downstream():
            process.send_signal(signal.SIGSTOP)

    def resume_downstream(self) -> None:
        for process in self.downstream():
            process.send_signal(signal.SIGCONT)

    def check_alive(self) -> None:
        for group, processes in self.groups.items():
            for process in processes:
                if process.poll() is not None:
                    tail = process.log_path.read_text(errors="replace").splitlines()[-15:]
                    raise benchlib.BenchError(
                        f"the {group} process (pid {process.pid}) exited with {process.returncode}; its log ends:\n  "
                        + "\n  ".join(tail)
                    )

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far, per process group (PostgreSQL and nats-server included)."""
        pids = {group: [p.pid for p in processes] for group, processes in self.groups.items()}
        postgres, nats = self.servers.postgres.pid(), self.servers.nats.pid()
        pids["postgres"] = [postgres] if postgres else []
        pids["nats"] = [nats] if nats else []
        usage = {group: benchlib.process_tree_cpu(group_pids) for group, group_pids in pids.items()}
        usage["bench"] = time.process_time()
        return usage

    # readiness ---------------------------------------------------------------------

    def wait_http(self, url: str, what: str, timeout: float = 120.0) -> None:
        import httpx

        from orders_platform.embedded.procs import wait_until

        def up() -> bool:
            self.check_alive()
            try:
                return httpx.get(url, timeout=2, headers=FORWARDED).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, timeout=timeout, interval=0.2):
            raise benchlib.BenchError(f"{what} did not answer {url} in {timeout:.0f}s")

    def wait_consumers(self, replicas: dict[str, int], timeout: float = 120.0) -> None:
        """Until every replica of each consumer has a pull request waiting on each of its streams."""
        from apps.eventbus.registry import registry

        async def ready(js) -> bool:
            for name, count in replicas.items():
                for stream in registry.streams_of(registry.consumer(name)):
                    if (await js.consumer_info(stream, name)).num_waiting < count:
                        return False
            return True

        async def poll() -> bool:
            async with benchlib.nats_client(self.servers.nats.url) as client:
                js = client.jetstream()
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    self.check_alive()
                    if await ready(js):
                        return True
                    await asyncio.sleep(0.2)
                return False

        if not asyncio.run(poll()):
            raise benchlib.BenchError(f"consumers {replicas} were not all fetching after {timeout:.0f}s")

    def wait_ready(self) -> None:
        self.wait_http(f"{self.gateway_url}/healthz", "the gateway simulator")
        self.wait_http(f"{self.web_url}/healthz", "gunicorn")
        self.wait_consumers(self.args.replicas)

    def set_latency(self, latency_ms: int) -> None:
        import httpx

        response = httpx.put(f"{self.gateway_url}/_control", json={"latency_ms": latency_ms}, timeout=10)
        response.raise_for_status()


# -- measurements ----------------------------------------------------------------------


@dataclass
class Run:
    label: str
    round: int
    orders: int = 0
    intake: float = float("nan")  # orders answered 201 / (first request sent -> last answer)
    saga: float = float("nan")  # orders / (first created_at -> last decided_at)
    latencies: list[float] = field(default_factory=list)  # decided_at - created_at, seconds
    cpu: dict[str, float] = field(default_factory=dict)  # cores busy, per process group
    web_cpu_ms: float = float("nan")  # (e): the web process's CPU milliseconds per order

    def pct(self, p: float) -> float:
        return benchlib.percentile(self.latencies, p)


@dataclass
class ChainState:
    last_id: int = 0
    last_hash: str = "0" * 64
    checked: int = 0
    broken: bool = False


class Bench:
    def __init__(self, platform: Platform, args: argparse.Namespace) -> None:
        self.platform, self.args = platform, args
        self.runs: dict[str, list[Run]] = {}
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.chain = ChainState()
        self.users = 0

    # helpers -----------------------------------------------------------------------

    def warn(self, label: str, message: str) -> None:
        """An invariant broke, or requests failed: the run's figures are suspect."""
        text = f"{label}: {message}"
        self.warnings.append(text)
        print(f"  WARNING ({text})", flush=True)

    def note(self, label: str, message: str) -> None:
        """Worth knowing, not a broken invariant (e.g. the open loop fell behind its schedule)."""
        text = f"{label}: {message}"
        self.notes.append(text)
        print(f"  note ({text})", flush=True)

    def new_client(self, label: str) -> tuple[str, str]:
        """A user of its own for one run (its id is the orders' customer_id) and its API token,
        obtained through ``POST /api/auth/token/``."""
        import httpx
        from django.contrib.auth import get_user_model

        self.users += 1
        username, password = f"bench-{label}-{self.users}", secrets.token_urlsafe(16)
        user = get_user_model().objects.create_user(username=username, password=password)
        response = httpx.post(
            f"{self.platform.web_url}/api/auth/token/",
            json={"username": username, "password": password},
            headers=FORWARDED,
            timeout=30,
        )
        if response.status_code != 200:
            raise benchlib.BenchError(f"POST /api/auth/token/ answered {response.status_code}: {response.text[:300]}")
        return str(user.pk), response.json()["token"]

    def load(self, *, token: str, path: str, mode: str, count: int, idempotency: bool) -> dict:
        """Run the load generator(s); merge their results."""
        from django.conf import settings

        shares = [count // self.args.loadgens + (i < count % self.args.loadgens) for i in range(self.args.loadgens)]
        body = {"lines": [{"sku": s, "quantity": q} for s, q in ORDER_LINES], "currency": settings.PLATFORM_CURRENCY}
        timeout = max(60.0, 10 * count / (self.args.rate if mode == "open" else 50.0))
        processes = []
        for index, share in enumerate(shares):
            if share == 0:
                continue
            plan = {
                "port": self.platform.web_port,
                "path": path,
                "token": token,
                "count": share,
                "mode": mode,
                "clients": max(1, self.args.clients // self.args.loadgens),
                "rate": self.args.rate / self.args.loadgens,
                "timeout": timeout,
                "idempotency": idempotency,
                "key_prefix": f"{secrets.token_hex(8)}-{index}",
                "body": body,
                "headers": FORWARDED,
            }
            process = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("loadgen.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            process.stdin.write(json.dumps(plan))
            process.stdin.close()
            processes.append(process)
        results = []
        for process in processes:
            output = process.stdout.read()
            if process.wait(timeout=timeout + 60) != 0:
                raise benchlib.BenchError(f"the load generator failed (exit {process.returncode})")
            results.append(json.loads(output))
        merged = {
            "sent": sum(r["sent"] for r in results),
            "statuses": sum((Counter(r["statuses"]) for r in results), Counter()),
            "errors": sum((Counter(r["errors"]) for r in results), Counter()),
            "late": sum(r["late"] for r in results),
            "cpu": sum(r["cpu"] for r in results),
            "latencies": [x for r in results for x in r["latencies"]],
        }
        answered = [r for r in results if r["first_sent"] and r["last_answered"]]
        merged["span"] = (
            max(r["last_answered"] for r in answered) - min(r["first_sent"] for r in answered) if answered else None
        )
        return merged

    def check_load(self, label: str, result: dict, count: int, expected_status: str = "201") -> int:
        ok = result["statuses"].get(expected_status, 0)
        others = {status: n for status, n in result["statuses"].items() if status != expected_status}
        if others or result["errors"] or result["sent"] < count:
            self.warn(
                label,
                f"{ok} of {count} orders answered {expected_status}; other statuses {others or 'none'}, "
                f"client errors {dict(result['errors']) or 'none'}, sent {result['sent']}",
            )
        return ok

    def wait_decided(self, label: str, customer: str) -> None:
        from apps.orders.models import Order

        pending = Order.objects.filter(customer_id=customer, status=Order.Status.PENDING)
        deadline = time.monotonic() + self.args.settle_timeout
        while pending.exists():
            if time.monotonic() > deadline:
                self.warn(label, f"{pending.count()} orders still PENDING after {self.args.settle_timeout:.0f}s")
                return
            self.platform.check_alive()
            time.sleep(0.1)

    def wait_quiescent(self, label: str, timeout: float = 120.0) -> None:
        """Until the outbox is empty and every durable of the running consumers has nothing pending."""
        from apps.eventbus.models import OutboxEvent
        from apps.eventbus.registry import registry

        async def outstanding(js) -> int:
            total = 0
            for name in CONSUMERS:
                for stream in registry.streams_of(registry.consumer(name)):
                    info = await js.consumer_info(stream, name)
                    total += info.num_pending + info.num_ack_pending
            return total

        async def poll() -> bool:
            async with benchlib.nats_client(self.platform.servers.nats.url) as client:
                js = client.jetstream()
                deadline, quiet = time.monotonic() + timeout, 0
                while time.monotonic() < deadline:
                    unsent = await asyncio.to_thread(OutboxEvent.objects.filter(sent_at__isnull=True).exists)
                    quiet = quiet + 1 if not unsent and await outstanding(js) == 0 else 0
                    if quiet >= 2:
                        return True
                    await asyncio.sleep(0.2)
                return False

        if not asyncio.run(poll()):
            self.warn(label, f"events still in flight {timeout:.0f}s after the orders were decided")

    # invariants --------------------------------------------------------------------

    def check_invariants(self, label: str, customer: str) -> dict[str, int]:
        import httpx

        from apps.audit.models import AuditEntry
        from apps.orders.models import Order

        orders = {
            str(pk): (status, total)
            for pk, status, total in Order.objects.filter(customer_id=customer).values_list(
                "id", "status", "total_amount"
            )
        }
        counts = Counter(status for status, _ in orders.values())
        if counts["PENDING"]:
            self.warn(label, f"{counts['PENDING']} orders left PENDING")
        if counts["CANCELLED"]:
            self.warn(label, f"{counts['CANCELLED']} orders CANCELLED (none expected: huge stock, no declines)")

        charges: dict[str, list[dict]] = {}
        for charge in httpx.get(f"{self.platform.gateway_url}/v1/charges", timeout=120).json()["data"]:
            if charge["reference"] in orders:
                charges.setdefault(charge["reference"], []).append(charge)
        wrong: list[str] = []
        for order_id, (status, total) in orders.items():
            mine = charges.get(order_id, [])
            captured = [c for c in mine if c["status"] == "succeeded"]
            if status == "CONFIRMED":
                good = (
                    len(mine) == 1
                    and len(captured) == 1
                    and Decimal(captured[0]["amount"]) == total
                    and Decimal(captured[0]["amount_refunded"]) == 0
                )
                if not good:
                    wrong.append(
                        f"CONFIRMED {order_id}: {len(mine)} charge(s) {[c['amount'] for c in mine]}, total {total}"
                    )
            elif status == "CANCELLED":
                net = sum((Decimal(c["amount"]) - Decimal(c["amount_refunded"]) for c in captured), Decimal(0))
                if net != 0:
                    wrong.append(f"CANCELLED {order_id}: {net} still captured")
        if wrong:
            self.warn(label, f"{len(wrong)} orders billed wrongly, e.g. " + "; ".join(wrong[:3]))

        entries = AuditEntry.objects.filter(correlation_id__in=list(orders))
        by_event = Counter(entries.values_list("correlation_id", "subject"))
        duplicates = sum(1 for n in by_event.values() if n > 1)
        if duplicates:
            self.warn(label, f"{duplicates} events recorded more than once in the audit log")
        for subject, expected in (("orders.created.v1", len(orders)), ("orders.confirmed.v1", counts["CONFIRMED"])):
            seen = sum(1 for (_, s) in by_event if s == subject)
            if seen != expected:
                self.warn(label, f"audit log has {subject} for {seen} of {expected} orders")
        self.verify_chain(label)
        return dict(counts)

    def verify_chain(self, label: str) -> None:
        """Verify the entries appended since the last check, linking on to the last one verified."""
        from apps.audit.chain import entry_hash
        from apps.audit.models import AuditEntry

        if self.chain.broken:
            return
        fields = (
            "id",
            "subject",
            "message_id",
            "correlation_id",
            "stream",
            "stream_sequence",
            "body",
            "headers",
            "previous_hash",
            "hash",
        )
        rows = AuditEntry.objects.filter(id__gt=self.chain.last_id).order_by("id").values_list(*fields)
        for (
            entry_id,
            subject,
            message_id,
            correlation_id,
            stream,
            sequence,
            body,
            headers,
            previous,
            digest,
        ) in rows.iterator(chunk_size=5000):
            expected = entry_hash(
                previous_hash=previous,
                subject=subject,
                message_id=message_id,
                correlation_id=correlation_id,
                stream=stream,
                stream_sequence=sequence,
                body=body,
                headers=headers,
            )
            if previous != self.chain.last_hash or expected != digest:
                why = (
                    "links to the wrong entry"
                    if previous != self.chain.last_hash
                    else "content does not match its hash"
                )
                self.warn(
                    label, f"audit chain broken at entry {entry_id} ({why}) after {self.chain.checked} good entries"
                )
                self.chain.broken = True
                return
            self.chain.last_id, self.chain.last_hash = entry_id, digest
            self.chain.checked += 1

    # runs --------------------------------------------------------------------------

    def record(self, run: Run) -> Run:
        self.runs.setdefault(run.label, []).append(run)
        return run

    def saga_run(
        self,
        label: str,
        rnd: int,
        *,
        latency_ms: int,
        mode: str,
        count: int,
        payments: tuple[int, int | None],
        backlog: bool = False,
    ) -> Run:
        """One run. ``backlog``: the payments processes are suspended while the orders are
        placed and the saga rate is timed from their resumption (payments alone sets the pace)."""
        import datetime

        from django.db.models import F, Max, Min

        from apps.orders.models import Order

        platform = self.platform
        platform.payments(*payments)
        platform.set_latency(latency_ms)
        customer, token = self.new_client(label)
        cpu_before, started = platform.cpu(), time.monotonic()
        if backlog:
            platform.signal_group("payments", signal.SIGSTOP)
        try:
            result = self.load(token=token, path="/api/orders/", mode=mode, count=count, idempotency=True)
        finally:
            resumed = datetime.datetime.now(datetime.UTC)
            if backlog:
                platform.signal_group("payments", signal.SIGCONT)
        placed = self.check_load(label, result, count)
        self.wait_decided(label, customer)
        cpu_after, wall = platform.cpu(), time.monotonic() - started
        cpu_after["loadgen"], cpu_before["loadgen"] = result["cpu"], 0.0

        orders = Order.objects.filter(customer_id=customer)
        span = orders.aggregate(first=Min("created_at"), last=Max("decided_at"))
        decided = orders.filter(decided_at__isnull=False)
        latencies = [
            d.total_seconds()
            for d in decided.annotate(lat=F("decided_at") - F("created_at")).values_list("lat", flat=True)
        ]
        run = Run(label, rnd, orders=placed, latencies=latencies)
        if result["span"]:
            run.intake = placed / result["span"]
        if span["last"] and latencies:
            first = resumed if backlog else span["first"]
            run.saga = len(latencies) / max(1e-6, (span["last"] - first).total_seconds())
        run.cpu = {group: (cpu_after[group] - cpu_before.get(group, 0.0)) / wall for group in cpu_after}
        self.wait_quiescent(label)
        counts = self.check_invariants(label, customer)
        if mode == "open" and result["late"]:
            self.note(label, f"{result['late']} of {count} orders left more than 50 ms after their slot")
        print(
            f"  round {rnd}  {label:<5} {placed:>5} orders  intake {run.intake:7,.0f}/s  saga {run.saga:7,.0f}/s  "
            f"placed->decided p50 {run.pct(50) * 1000:6.0f} p95 {run.pct(95) * 1000:6.0f} "
            f"p99 {run.pct(99) * 1000:6.0f} ms  {dict(sorted(counts.items()))}",
            flush=True,
        )
        print(f"            cpu (cores): {format_cpu(run.cpu)}", flush=True)
        platform.check_alive()
        return self.record(run)

    def intake_pair(self, rnd: int) -> None:
        """(e): POST /api/orders/ and the plain DRF create, same body, same clients, back to back."""
        from apps.eventbus.models import OutboxEvent
        from apps.orders.models import Order

        platform = self.platform
        platform.payments(self.args.replicas["payments"], None)
        platform.set_latency(0)
        endpoints = [("e-api", "/api/orders/", True), ("e-plain", "/bench/plain-orders/", False)]
        if rnd % 2 == 0:
            endpoints.reverse()
        clients = {label: self.new_client(label) for label, _, _ in endpoints}
        suspend = self.args.intake_downstream == "stopped"
        results = {}
        if suspend:
            platform.suspend_downstream()
        try:
            for label, path, idempotent in endpoints:
                cpu_before, started = platform.cpu(), time.monotonic()
                result = self.load(
                    token=clients[label][1], path=path, mode="closed", count=self.args.orders, idempotency=idempotent
                )
                cpu_after, wall = platform.cpu(), time.monotonic() - started
                cpu_after["loadgen"], cpu_before["loadgen"] = result["cpu"], 0.0
                placed = self.check_load(label, result, self.args.orders)
                results[label] = Run(label, rnd, orders=placed, intake=placed / result["span"] if result["span"] else 0)
                results[label].cpu = {g: (cpu_after[g] - cpu_before.get(g, 0.0)) / wall for g in cpu_after}
                results[label].web_cpu_ms = 1000 * (cpu_after["web"] - cpu_before["web"]) / max(1, placed)
                results[label].latencies = result["latencies"]  # HTTP response times here, not the saga's
        finally:
            if suspend:
                platform.resume_downstream()
        plain_customer = clients["e-plain"][0]
        plain_ids = [str(pk) for pk in Order.objects.filter(customer_id=plain_customer).values_list("id", flat=True)]
        if len(plain_ids) != results["e-plain"].orders:
            self.warn("e-plain", f"{len(plain_ids)} rows for {results['e-plain'].orders} orders answered 201")
        if OutboxEvent.objects.filter(aggregate_id__in=plain_ids).exists():
            self.warn("e-plain", "the plain create wrote outbox events")
        self.wait_decided("e-api", clients["e-api"][0])
        self.wait_quiescent("e-api")
        counts = self.check_invariants("e-api", clients["e-api"][0])
        for label, _, _ in endpoints:
            self.record(results[label])
        api, plain = results["e-api"].intake, results["e-plain"].intake
        print(
            f"  round {rnd}  e     intake POST /api/orders/ {api:7,.0f}/s   plain DRF create {plain:7,.0f}/s   "
            f"ratio {api / plain if plain else float('nan'):.2f}   (downstream {self.args.intake_downstream}) "
            f"{dict(sorted(counts.items()))}",
            flush=True,
        )
        for label, _, _ in endpoints:
            run = results[label]
            print(
                f"            {label}: HTTP p50 {run.pct(50) * 1000:.0f} p99 {run.pct(99) * 1000:.0f} ms; "
                f"web CPU {run.web_cpu_ms:.1f} ms/order; cpu (cores): {format_cpu(run.cpu)}",
                flush=True,
            )
        platform.check_alive()

    def warm_up(self) -> None:
        """Untimed: every web worker and consumer imports, connects and answers before the first run."""
        count = max(60, 20 * self.args.web_workers)
        customer, token = self.new_client("warmup")
        self.load(token=token, path="/api/orders/", mode="closed", count=count, idempotency=True)
        _, plain_token = self.new_client("warmup-plain")
        self.load(token=plain_token, path="/bench/plain-orders/", mode="closed", count=count, idempotency=False)
        self.wait_decided("warm-up", customer)
        self.wait_quiescent("warm-up")
        self.check_invariants("warm-up", customer)

    def round(self, rnd: int) -> None:
        args, default_payments = self.args, (self.args.replicas["payments"], None)
        if "a" in args.scenarios:
            self.saga_run("a", rnd, latency_ms=0, mode="closed", count=args.orders, payments=default_payments)
        if "b" in args.scenarios:
            self.saga_run(
                "b", rnd, latency_ms=args.latency_ms, mode="closed", count=args.orders, payments=default_payments
            )
        if "c" in args.scenarios:
            for label, latency in (("c0", 0), ("c200", args.latency_ms)):
                self.saga_run(
                    label, rnd, latency_ms=latency, mode="open", count=args.open_orders, payments=default_payments
                )
        if "e" in args.scenarios:
            self.intake_pair(rnd)
        if "d" in args.scenarios:
            order = (1, 2) if rnd % 2 else (2, 1)
            for replicas in order:
                self.saga_run(
                    f"d{replicas}",
                    rnd,
                    latency_ms=args.latency_ms,
                    mode="closed",
                    count=args.scaling_orders,
                    payments=(replicas, args.scaling_concurrency),
                    backlog=True,
                )

    # the report --------------------------------------------------------------------

    def series(self, label: str, attr: str) -> list[float]:
        return [getattr(run, attr) for run in self.runs.get(label, [])]

    def summary(self) -> list[list[str]]:
        rows: list[list[str]] = []
        args = self.args

        def spread(values: list[float], unit: str = "/s", scale: float = 1.0) -> str:
            if not values:
                return "-"
            med = statistics.median(values) * scale
            return f"{med:,.0f}{unit} ({min(values) * scale:,.0f}-{max(values) * scale:,.0f})"

        def ratio_text(value: float, target: float) -> str:
            """Two decimals, three when two would round onto the target and hide the verdict."""
            return f"{value:.3f}" if round(value, 2) == target and value != target else f"{value:.2f}"

        def verdict(ok: bool) -> str:
            return "PASS" if ok else "FAIL"

        saga_a = self.series("a", "saga")
        if saga_a:
            med = statistics.median(saga_a)
            rows.append(
                [
                    f"a  whole saga, provider 0 ms, {args.clients} clients",
                    spread(saga_a),
                    ">= 300/s",
                    f"{med / TARGETS['a']:.2f}",
                    verdict(med >= TARGETS["a"]),
                ]
            )
            rows.append(
                ["a  intake POST /api/orders/ (saga running)", spread(self.series("a", "intake")), "-", "-", "-"]
            )
        saga_b = self.series("b", "saga")
        if saga_b:
            med_b = statistics.median(saga_b)
            ratio = med_b / statistics.median(saga_a) if saga_a else float("nan")
            rows.append(
                [
                    f"b  whole saga, provider {args.latency_ms} ms",
                    spread(saga_b),
                    ">= 0.8 x (a)",
                    ratio_text(ratio, TARGETS["b"]) if saga_a else "-",
                    verdict(ratio >= TARGETS["b"]) if saga_a else "-",
                ]
            )
        for label, latency in (("c0", 0), ("c200", args.latency_ms)):
            runs = self.runs.get(label, [])
            if not runs:
                continue
            p = {q: statistics.median([run.pct(q) for run in runs]) * 1000 for q in (50, 95, 99)}
            p99s = [run.pct(99) * 1000 for run in runs]
            target = TARGETS[label] * 1000 if args.rate == 100 and latency in (0, 200) else None  # set at 100/s
            rows.append(
                [
                    f"{label[0]}  placed->decided at {args.rate:g}/s offered, provider {latency} ms",
                    f"p50 {p[50]:.0f} / p95 {p[95]:.0f} / p99 {p[99]:.0f} ms (p99 {min(p99s):.0f}-{max(p99s):.0f})",
                    f"p99 <= {target:.0f} ms" if target else "-",
                    f"{p[99] / target:.2f}" if target else "-",
                    verdict(p[99] <= target) if target else "-",
                ]
            )

        def ratio_row(key: str, label: str, figure: str, top: list[float], bottom: list[float]) -> list[str]:
            ratio, target = statistics.median(top) / statistics.median(bottom), TARGETS[key]
            return [label, figure, f">= {target}", ratio_text(ratio, target), verdict(ratio >= target)]

        one, two = self.series("d1", "saga"), self.series("d2", "saga")
        if one and two:
            label = f"d  payments x2 / x1, drain (concurrency {args.scaling_concurrency}, {args.latency_ms} ms)"
            rows.append(ratio_row("d", label, f"x1 {spread(one)}, x2 {spread(two)}", two, one))
        api, plain = self.series("e-api", "intake"), self.series("e-plain", "intake")
        if api and plain:
            label = f"e  intake POST /api/orders/ / plain DRF create (downstream {args.intake_downstream})"
            rows.append(ratio_row("e", label, f"{spread(api)} vs {spread(plain)}", api, plain))
        total_runs = sum(len(runs) for runs in self.runs.values())
        rows.append(
            [
                "invariants (billing, PENDING, audit unique + chain)",
                f"{total_runs} runs, {len(self.warnings)} warning(s); chain {self.chain.checked:,} entries"
                + (" BROKEN" if self.chain.broken else " verified"),
                "no WARNING",
                "-",
                verdict(not self.warnings and not self.chain.broken),
            ]
        )
        return rows


def format_cpu(cpu: dict[str, float]) -> str:
    busy = sorted(((group, cores) for group, cores in cpu.items() if cores >= 0.01), key=lambda item: -item[1])
    total = sum(cores for _, cores in busy)
    return ", ".join(f"{group} {cores:.2f}" for group, cores in busy) + f"; total {total:.2f}"


HEADERS = ("scenario", "figure (median, min-max)", "target", "ratio", "verdict")


def main() -> int:
    args = parse_args()
    try:
        with benchlib.report_interrupts(), benchlib.PrivateServers() as servers:
            platform = Platform(servers, args)
            try:
                platform.prepare()
                replicas = ", ".join(f"{name} x{n}" for name, n in args.replicas.items())
                params = {
                    "Code": benchlib.code_state(),
                    "Web": f"gunicorn, {args.web_workers} {'sync' if args.web_threads == 1 else 'gthread'} worker(s)"
                    + (f" x {args.web_threads} threads" if args.web_threads > 1 else "")
                    + f", {WEB_SETTINGS} (production + /bench/plain-orders/), 127.0.0.1:{platform.web_port}",
                    "Consumers": f"relay x1, {replicas} (runconsumer, production settings)",
                    "Throttles": "raised for the benchmark: " + ", ".join(f"{k}={v}" for k, v in THROTTLES.items()),
                    "Load": f"{args.loadgens} load-generator process(es); closed loop {args.clients} clients x "
                    f"{args.orders} orders; open loop {args.rate:g}/s x {args.open_orders} orders; "
                    f"(d) {args.scaling_orders} orders",
                    "Scenarios": f"{','.join(args.scenarios)}, {args.runs} round(s) interleaved",
                    "Order": "2 lines (BENCH-1 x1, BENCH-2 x2), a unique Idempotency-Key each",
                }
                benchlib.print_facts(
                    "saga throughput (through POST /api/orders/)", benchlib.environment_facts(servers, params)
                )
                platform.start()
                platform.wait_ready()
                bench = Bench(platform, args)
                bench.warm_up()
                print("Measuring (each scenario once per round, interleaved):", flush=True)
                for rnd in range(1, args.runs + 1):
                    bench.round(rnd)
                rows = bench.summary()
            finally:
                platform.close()
    except benchlib.BenchError as exc:
        print(f"\nThe benchmark could not run: {exc}", file=sys.stderr)
        return 1
    print()
    benchlib.print_table(HEADERS, rows)
    for warning in bench.warnings:
        print(f"  WARNING: {warning}")
    for note in bench.notes:
        print(f"  note: {note}")
    failed = [row[0] for row in rows if row[-1] == "FAIL"]
    print(f"\nOVERALL: {'FAIL' if failed else 'PASS'} (a report, not a test: the exit code is 0 either way)")
    if args.summary_json:
        args.summary_json.write_text(
            json.dumps(
                {
                    "title": "saga (bench/saga_throughput.py)",
                    "headers": HEADERS,
                    "rows": rows,
                    "warnings": bench.warnings,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
