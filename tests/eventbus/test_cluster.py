"""The platform on the fixtures' 3-node loopback cluster with R3 streams: the scale-out proof.

Two tests. The first drives the event machinery alone at ~200 events/s; the second, the real
saga (relay, inventory, payments, orders, the gateway simulator) while the ORDERS and then the
PAYMENTS stream leaders are killed: every order is confirmed and charged exactly once.

The relay and a consumer run as real processes (``runrelay``, ``runconsumer testing``) given all
three servers (``NATS_URL`` comma-separated). While events flow, the TESTING stream's leader is
killed (SIGKILL) and brought back, twice. Then: every event JetStream acknowledged to the relay
(its outbox row marked sent, with the stream sequence of the acknowledgement) is in the stream at
that sequence, once; every one was handled exactly once (the handler's Effect rows have no unique
key, so a second application would show); nothing is left pending. Run with ``-s`` for the figures.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import threading
import time
from collections import Counter
from decimal import Decimal
from types import SimpleNamespace

import nats
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from nats.js.api import AckPolicy, ConsumerConfig

from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.producing.outbox import outbox_write_many
from apps.inventory.services import product_ensure
from apps.orders.models import Order
from apps.orders.services import order_place
from apps.payments.models import Payment
from orders_platform.embedded.procs import wait_until
from tests.bus import Bus, stop_process, wait_for
from tests.gateway import Gateway, charges
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

pytestmark = pytest.mark.slow

STREAM, CONSUMER = "TESTING", "testing"
RATE_BATCH, RATE_PAUSE = 10, 0.05  # events per transaction, seconds between them (~150-200 events/s)
KILLS = 2


def call(urls: list[str], operation, timeout: float = 30.0):
    """``operation(js)`` on a fresh connection to the cluster, retried while the cluster heals
    (no leader yet, a node down) for up to ``timeout`` seconds."""

    async def main():
        deadline = time.monotonic() + timeout
        while True:
            try:

                async def quiet(_exc):
                    pass

                client = await nats.connect(
                    urls, error_cb=quiet, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=1
                )
                try:
                    return await operation(client.jetstream(timeout=2))
                finally:
                    await client.close()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    return asyncio.run(main())


class Steady(threading.Thread):
    """Calls ``step()`` every ``pause`` seconds until stopped, on a database connection of its own."""

    pause = RATE_PAUSE

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.step()
                time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error:
            raise self.error


class Producer(Steady):
    """Writes events to the outbox, a small transaction at a time."""

    written = 0

    def step(self) -> None:
        with transaction.atomic():
            outbox_write_many(
                [
                    SomethingHappened(value=self.written + i, correlation_id=f"agg-{(self.written + i) % 7}")
                    for i in range(RATE_BATCH)
                ]
            )
        self.written += RATE_BATCH


def test_the_stream_leader_dies_twice_while_orders_flow_and_nothing_is_lost_or_applied_twice(
    nats_cluster, settings, transactional_db
):
    urls = nats_cluster.urls
    settings.NATS = {**settings.NATS, "SERVERS": urls}
    settings.EVENTBUS = {**settings.EVENTBUS, "STREAM_REPLICAS": 3}
    call(urls, lambda js: js.account_info())  # the meta leader answers
    wait_for(lambda: _setup(), 30, "nats_setup on the fresh cluster")
    info = call(urls, lambda js: js.stream_info(STREAM))
    assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2

    bus = Bus(SimpleNamespace(url=",".join(urls)))  # NATS_URL: all three servers
    env = {"EVENTBUS_STREAM_REPLICAS": "3"}
    relay = Drained(bus.relay_process(env={**env, "NATS_CLIENT_NAME": "relay"}))
    consumer = Drained(bus.consumer_process(CONSUMER, env={**env, "NATS_CLIENT_NAME": "consumer"}))
    producer = Producer()
    kills: list[dict] = []
    started = time.monotonic()
    try:
        producer.start()
        wait_for(lambda: Effect.objects.exists(), 60, "events flow before the first kill")
        time.sleep(2)
        for _ in range(KILLS):
            kills.append(_kill_the_leader_and_bring_it_back(nats_cluster, urls))
            time.sleep(2)  # flowing again on the healed cluster
        producer.stop()
        written = producer.written

        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), 60, "the relay sent all")
        wait_for(lambda: Effect.objects.count() >= written, 60, "the consumer handled all")
        wait_for(lambda: _drained(urls), 30, "nothing pending")
    finally:
        producer.stop()
        (relay_code, relay_out), (consumer_code, consumer_out) = relay.stop(), consumer.stop()
    elapsed = time.monotonic() - started

    sent = dict(OutboxEvent.objects.filter(sent_at__isnull=False).values_list("message_id", "stream_sequence"))
    stored = _stream_contents(urls)  # sequence -> Nats-Msg-Id
    at_sequence = {message_id: stored.get(sequence) for message_id, sequence in sent.items()}
    lost = [message_id for message_id, found in at_sequence.items() if found != message_id]
    in_stream = Counter(stored.values())
    duplicated_in_stream = sum(count - 1 for count in in_stream.values())
    effects = Counter(Effect.objects.filter(consumer=CONSUMER).values_list("message_id", flat=True))
    applied_twice = sum(count - 1 for count in effects.values())
    final = call(urls, lambda js: js.consumer_info(STREAM, CONSUMER))
    dead_letters = call(urls, lambda js: js.stream_info("DLQ")).state.messages

    failovers = ", ".join("{killed} (clients: {clients})->{new} in {failover:.1f}s".format(**kill) for kill in kills)
    reconnects = relay_out.count("NATS reconnected") + consumer_out.count("NATS reconnected")
    print(
        f"\ncluster test: {written} events written, {len(sent)} acknowledged to the relay (sent), "
        f"{len(stored)} in the stream, leader kills {len(kills)} ({failovers}), "
        f"lost {len(lost)}, duplicated in stream {duplicated_in_stream}, effects {sum(effects.values())} "
        f"for {len(effects)} events, applied twice {applied_twice}, redelivered {final.num_redelivered}, "
        f"pending {final.num_pending}/{final.num_ack_pending}, dead letters {dead_letters}, "
        f"client reconnects {reconnects}, {elapsed:.0f}s"
    )
    assert relay_code == 0, relay_out[-3000:]
    assert consumer_code == 0, consumer_out[-3000:]
    assert len(kills) == KILLS and all(kill["new"] != kill["killed"] for kill in kills)
    assert len(sent) == written, "every event written was acknowledged to the relay"
    assert lost == [], f"acknowledged but not in the stream at its sequence: {lost[:5]}"
    assert duplicated_in_stream == 0 and len(stored) == written
    assert set(effects) == set(sent), "every acknowledged event was handled"
    assert applied_twice == 0, "no event was applied twice"
    assert ProcessedMessage.objects.filter(consumer=CONSUMER).count() == written
    assert final.num_pending == 0 and final.num_ack_pending == 0
    assert dead_letters == 0


class Drained:
    """A child process whose output is read as it comes: a pipe nobody reads fills up (64 KiB) and
    then blocks every thread of the child that logs, which looks like a hang of the child."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process, self.lines = process, []
        self.reader = threading.Thread(target=lambda: self.lines.extend(process.stdout), daemon=True)
        self.reader.start()

    def send_signal(self, sig) -> None:
        self.process.send_signal(sig)

    def stop(self) -> tuple[int | str, str]:
        """SIGTERM (SIGKILL after 30 s, reported as "hung"); the exit code and the whole output."""
        try:
            code: int | str = stop_process(self.process)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            code = "hung"
        self.reader.join(10)
        return code, "".join(self.lines)


def _stop_all(processes: dict[str, Drained]) -> tuple[dict, dict]:
    codes, outputs = {}, {}
    for name, process in processes.items():
        codes[name], outputs[name] = process.stop()
    return codes, outputs


def _setup() -> bool:
    try:
        call_command("nats_setup", stdout=io.StringIO())
    except Exception:  # noqa: BLE001 - the cluster's first seconds: retried
        return False
    return True


def _kill_the_leader_and_bring_it_back(cluster, urls: list[str], stream: str = STREAM) -> dict:
    """SIGKILL the stream's leader, wait for a new one, restart the old node on its store and
    wait until every replica is current again."""
    leader = call(urls, lambda js: js.stream_info(stream)).cluster.leader
    node = cluster.node(leader)
    connected = sorted(c.get("name") or "?" for c in node.monitor("connz").get("connections") or [])
    node.kill()
    killed_at = time.monotonic()

    async def new_leader(js):
        info = await js.stream_info(stream)
        if info.cluster.leader in (None, leader):
            raise RuntimeError("no new leader yet")
        return info.cluster.leader

    survivors = [other.url for other in cluster.nodes if other is not node]
    new = call(survivors, new_leader)
    failover = time.monotonic() - killed_at
    time.sleep(2)  # events flow on two nodes
    node.start()

    async def all_current(js):
        info = await js.stream_info(stream)
        replicas = info.cluster.replicas or []
        if len(replicas) != 2 or not all(peer.current and not peer.offline for peer in replicas):
            raise RuntimeError("a replica is still catching up")

    call(urls, all_current, timeout=60)
    return {
        "stream": stream,
        "killed": leader,
        "new": new,
        "failover": failover,
        "clients": "+".join(connected) or "none",
    }


def _drained(urls: list[str]) -> bool:
    info = call(urls, lambda js: js.consumer_info(STREAM, CONSUMER))
    return info.num_pending == 0 and info.num_ack_pending == 0


def _stream_contents(urls: list[str]) -> dict[int, str]:
    """Every message of the stream: stream sequence -> its Nats-Msg-Id (through an ephemeral
    consumer that acknowledges nothing)."""

    async def read(js):
        last = (await js.stream_info(STREAM)).state.last_seq
        await js.add_consumer(
            STREAM,
            ConsumerConfig(name="cluster-check", ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=60.0),
        )
        subscription = await js.pull_subscribe_bind(consumer="cluster-check", stream=STREAM)
        contents: dict[int, str] = {}
        while not contents or max(contents) < last:
            for message in await subscription.fetch(500, timeout=5):
                contents[message.metadata.sequence.stream] = (message.headers or {}).get("Nats-Msg-Id")
        await js.delete_consumer(STREAM, "cluster-check")
        return contents

    return call(urls, read, timeout=60)


# -- the real saga on the cluster: money streams fail over while orders are placed -------------------


ORDER_BATCH, ORDER_PAUSE = 4, 0.2  # orders per round, seconds between rounds (~20 orders/s)
SAGA = ("inventory", "payments", "orders")


class OrderTaker(Steady):
    """Places orders through ``order_place`` (the API's service), a few at a time."""

    pause = ORDER_PAUSE

    def __init__(self) -> None:
        super().__init__()
        self.placed: list[tuple[str, Decimal]] = []

    def step(self) -> None:
        for _ in range(ORDER_BATCH):
            order = order_place(customer_id="cluster", lines=[("KB", 1 + len(self.placed) % 3)])
            self.placed.append((str(order.pk), order.total_amount))


def test_the_order_and_payment_leaders_die_while_orders_are_placed_and_each_is_charged_once(
    nats_cluster, settings, transactional_db, tmp_path
):
    urls = nats_cluster.urls
    settings.NATS = {**settings.NATS, "SERVERS": urls}
    settings.EVENTBUS = {**settings.EVENTBUS, "STREAM_REPLICAS": 3}
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=100_000)
    call(urls, lambda js: js.account_info())
    wait_for(lambda: _setup(), 30, "nats_setup on the fresh cluster")
    gateway = Gateway(tmp_path / "ledger.jsonl").start()
    bus = Bus(SimpleNamespace(url=",".join(urls)))
    env = {"EVENTBUS_STREAM_REPLICAS": "3", "PAYMENT_GATEWAY_URL": gateway.url}
    processes = {"relay": Drained(bus.relay_process(env=env))}
    processes.update({name: Drained(bus.consumer_process(name, env=env)) for name in SAGA})
    taker = OrderTaker()
    kills: list[dict] = []
    started = time.monotonic()
    try:
        taker.start()
        wait_for(lambda: Order.objects.exclude(status="PENDING").exists(), 60, "orders are decided before the kills")
        for stream in ("ORDERS", "PAYMENTS"):
            kills.append(_kill_the_leader_and_bring_it_back(nats_cluster, urls, stream))
            time.sleep(2)
        taker.stop()
        decided = wait_until(lambda: not Order.objects.filter(status="PENDING").exists(), timeout=120, interval=0.2)
        if not decided:  # what each process is waiting for, in its output (see management/process.py)
            for process in processes.values():
                process.send_signal(signal.SIGUSR1)
            time.sleep(1)
    finally:
        taker.stop()
        codes, outputs = _stop_all(processes)
        try:
            charged = {order_id: charges(gateway, order_id) for order_id, _ in taker.placed}
        finally:
            gateway.stop()
    elapsed = time.monotonic() - started

    placed = dict(taker.placed)
    statuses = Counter(Order.objects.values_list("status", flat=True))
    twice = [order_id for order_id, found in charged.items() if len(found) != 1]
    wrong = [
        order_id for order_id, total in placed.items()
        if len(charged[order_id]) == 1 and Decimal(charged[order_id][0]["amount"]) != total
    ]  # fmt: skip
    payments = Counter(Payment.objects.values_list("status", flat=True))
    dead_letters = call(urls, lambda js: js.stream_info("DLQ")).state.messages
    failovers = ", ".join("{stream} {killed}->{new} in {failover:.1f}s".format(**kill) for kill in kills)
    print(
        f"\ncluster saga: {len(placed)} orders placed, {dict(statuses)}, leader kills {len(kills)} ({failovers}), "
        f"charged once {len(placed) - len(twice)}, charged other than once {len(twice)}, wrong amount {len(wrong)}, "
        f"payments {dict(payments)}, dead letters {dead_letters}, {elapsed:.0f}s"
    )
    tails = "\n".join(f"--- {name} (exit {codes[name]})\n{outputs[name][-6000:]}" for name in processes)
    assert decided, f"orders still PENDING after 120 s: {dict(statuses)}\n{tails}"
    assert all(code == 0 for code in codes.values()), tails
    assert len(kills) == 2 and all(kill["new"] != kill["killed"] for kill in kills)
    assert statuses == {"CONFIRMED": len(placed)}, "every order placed was confirmed, none lost"
    assert twice == [] and wrong == [], f"charged other than once: {twice[:5]}; wrong amount: {wrong[:5]}"
    assert payments == {"CAPTURED": len(placed)}
    assert dead_letters == 0
