"""HTTP load generator for the saga benchmark: a process of its own, loopback only, bounded.

    echo '{"port": 8000, "path": "/api/orders/", "token": "...", "mode": "closed", ...}' \
        | .venv/bin/python bench/loadgen.py

Reads one JSON object (the plan, see ``Plan``) on stdin, places ``count`` orders with
``POST`` and prints one JSON object (the result, see ``run``) on stdout. No Django, no
third-party HTTP client: a minimal HTTP/1.1 client on asyncio streams (keep-alive when the
server offers it; gunicorn's sync workers close every connection, so each order then opens
a new one, as a client behind a load balancer would see it), so the generator costs the
2-core machine as little CPU as possible.

Modes:

  closed  ``clients`` concurrent clients; each sends its next order when the previous one
          has been answered (throughput: what the server sustains).
  open    orders sent at a fixed offered ``rate`` (orders/s) whatever the answers, at most
          ``max_in_flight`` at once (latency at a known load; the achieved rate is reported).

Bounded in count and in time: it stops at ``count`` orders or after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"  # loopback only, whatever the plan says


@dataclass
class Plan:
    port: int
    path: str
    token: str
    count: int
    mode: str = "closed"  # or "open"
    clients: int = 16
    rate: float = 100.0
    max_in_flight: int = 512
    timeout: float = 300.0
    idempotency: bool = True
    key_prefix: str = field(default_factory=lambda: uuid.uuid4().hex)
    body: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    first_sent: float | None = None  # time.time()
    last_answered: float | None = None
    sent: int = 0
    late: int = 0  # open loop: sends that left more than 50 ms after their slot


class Connections:
    """Idle keep-alive connections, reused when the server keeps them open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(HOST, self.port)
        return reader, writer, False

    def release(self, reader, writer, keep: bool) -> None:
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(chunk[:-2] for chunk in chunks)
    else:
        body, keep = await reader.read(), False
    return int(status), body, keep


class Client:
    def __init__(self, plan: Plan, tally: Tally) -> None:
        self.plan, self.tally = plan, tally
        self.connections = Connections(plan.port)
        self.body = json.dumps(plan.body, separators=(",", ":")).encode()
        base = [
            f"POST {plan.path} HTTP/1.1",
            f"Host: {HOST}:{plan.port}",
            f"Authorization: Token {plan.token}",
            "Content-Type: application/json",
            "Accept: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in plan.headers.items()),
        ]
        self.head = "\r\n".join(base)

    async def place(self, index: int) -> None:
        head = self.head
        if self.plan.idempotency:
            head += f"\r\nIdempotency-Key: {self.plan.key_prefix}-{index}"
        request = (head + "\r\n\r\n").encode() + self.body
        tally = self.tally
        sent = time.time()
        if tally.first_sent is None:
            tally.first_sent = sent
        tally.sent += 1
        started = time.perf_counter()
        writer = None
        try:
            for attempt in (1, 2):
                reader, writer, reused = await self.connections.acquire()
                try:
                    writer.write(request)
                    await writer.drain()
                    status, _body, keep = await read_response(reader)
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    writer = None
                    if not reused or attempt == 2:  # a stale keep-alive connection gets one retry
                        raise
            self.connections.release(reader, writer, keep)
            writer = None
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            tally.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            return
        tally.statuses[str(status)] += 1
        tally.latencies.append(time.perf_counter() - started)
        tally.last_answered = time.time()


async def closed_loop(plan: Plan, client: Client, deadline: float) -> None:
    counter = iter(range(plan.count))

    async def one_client() -> None:
        for index in counter:
            if time.perf_counter() > deadline:
                return
            await client.place(index)

    await asyncio.gather(*(one_client() for _ in range(plan.clients)))


async def open_loop(plan: Plan, client: Client, deadline: float) -> None:
    slots = asyncio.Semaphore(plan.max_in_flight)
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()

    async def one(index: int) -> None:
        try:
            await client.place(index)
        finally:
            slots.release()

    for index in range(plan.count):
        slot = start + index / plan.rate
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        now = time.perf_counter()
        if now > deadline:
            slots.release()
            break
        if now - slot > 0.05:
            client.tally.late += 1
        task = asyncio.create_task(one(index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=max(1.0, deadline - time.perf_counter()))


async def run(plan: Plan) -> dict:
    tally = Tally()
    client = Client(plan, tally)
    deadline = time.perf_counter() + plan.timeout
    try:
        if plan.mode == "closed":
            await closed_loop(plan, client, deadline)
        elif plan.mode == "open":
            await open_loop(plan, client, deadline)
        else:
            raise SystemExit(f"unknown mode {plan.mode!r}")
    finally:
        client.connections.close()
    answered = len(tally.latencies)
    latencies = sorted(tally.latencies)

    def percentile(p: float) -> float | None:
        return latencies[min(answered - 1, int(p / 100 * answered))] if answered else None

    span = (tally.last_answered - tally.first_sent) if answered and tally.first_sent else None
    return {
        "sent": tally.sent,
        "answered": answered,
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "late": tally.late,
        "first_sent": tally.first_sent,
        "last_answered": tally.last_answered,
        "span": span,
        "http_p50": percentile(50),
        "http_p99": percentile(99),
        "latencies": [round(x, 5) for x in tally.latencies],
        "cpu": time.process_time(),  # this process's CPU seconds
        "timed_out": tally.sent < plan.count,
    }


def main() -> int:
    plan = Plan(**json.load(sys.stdin))
    if plan.count < 1 or plan.clients < 1 or plan.rate <= 0:
        raise SystemExit("count and clients must be at least 1, rate above 0")
    result = asyncio.run(run(plan))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
