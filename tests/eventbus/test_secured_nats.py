"""Secured NATS: one account, one user per role, per-subject permissions derived from the registry
(``apps/eventbus/jetstream/permissions.py``, ``manage.py nats_auth``, ``docker/nats/auth.conf``).

A nats-server started with the generated configuration runs the relay and a consumer as real
processes with their own users; the same server refuses what each role must never do, and says so.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass

import nats
import pytest
from django.core.management import call_command
from django.db import transaction
from nats.errors import TimeoutError as NatsTimeoutError

from apps.eventbus.consuming.replay import replay
from apps.eventbus.jetstream import control, monitoring
from apps.eventbus.jetstream.permissions import durables, inbox_prefix, render, users
from apps.eventbus.models import OutboxEvent
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.producing.reconciliation import outbox_reconcile
from apps.eventbus.registry import ConsumerSpec, registry
from orders_platform.embedded import NatsServer, nats_server_binary
from orders_platform.health import check_nats
from tests.bus import Bus, stop_process, wait_for
from tests.support import ROOT, clean_env, manage
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect

AUTH_CONF = ROOT / "docker" / "nats" / "auth.conf"
# [ERR] 127.0.0.1:4339 - cid:8 - "v2.16.0:python3" - "ORDERS/user:consumer-testing" - Publish Violation - Subject "..."
VIOLATION = re.compile(r"\"\w+/user:([^\"]+)\" - (Publish|Subscription) Violation - Subject \"([^\"]+)\"")


@dataclass
class Secured:
    server: NatsServer
    passwords: dict[str, str]

    def env(self, user: str) -> dict[str, str]:
        """What a process of ``user`` is configured with (its inbox prefix follows from NATS_USER)."""
        return {"NATS_USER": user, "NATS_PASSWORD": self.passwords[user], "EVENTBUS_PROVISION_AT_START": "false"}

    def violations(self) -> list[tuple[str, str, str]]:
        """(user, kind, subject) of every permissions violation the server logged."""
        return VIOLATION.findall(self.server.log_path.read_text(errors="replace"))

    def run(self, user: str, scenario):
        """``scenario(client, errors)`` on a connection of ``user``; ``errors``: what the server told it."""

        async def main():
            errors: list[str] = []

            async def on_error(exc):
                errors.append(str(exc))

            client = await nats.connect(
                self.server.url,
                user=user,
                password=self.passwords[user],
                inbox_prefix=inbox_prefix(user),
                error_cb=on_error,
                allow_reconnect=False,
                connect_timeout=2,
            )
            try:
                result = await scenario(client, errors)
                await client.flush(timeout=2)
                await asyncio.sleep(0.2)  # the server's -ERR for the last operation
                return result, errors
            finally:
                await client.close()

        return asyncio.run(main())


@pytest.fixture
def secured(tmp_path, settings) -> Secured:
    """A nats-server with the accounts and users generated from this (test) registry, every
    stream and durable created by ``nats_setup`` as the admin user; the platform is the admin."""
    passwords = {user.name: f"p{secrets.token_hex(16)}" for user in users(registry)}
    env = {user.password_variable: passwords[user.name] for user in users(registry)}
    server = NatsServer(tmp_path / "nats", config=render(registry), env=env).start()
    settings.NATS = {
        **settings.NATS,
        "SERVERS": [server.url],
        "USER": "admin",
        "PASSWORD": passwords["admin"],
        "INBOX_PREFIX": inbox_prefix("admin"),
    }
    call_command("nats_setup", stdout=io.StringIO())
    yield Secured(server, passwords)
    server.stop()


def as_user(settings, secured: Secured, user: str) -> None:
    """Point the platform's in-process client at ``user`` (the web process's configuration)."""
    settings.NATS = {
        **settings.NATS,
        "USER": user,
        "PASSWORD": secured.passwords[user],
        "INBOX_PREFIX": inbox_prefix(user),
    }


# -- the flow, each process with its own user ----------------------------------------------------


@pytest.mark.slow
def test_the_relay_and_a_consumer_run_with_their_own_users_and_an_event_flows(secured, transactional_db):
    with transaction.atomic():
        events = [outbox_write(SomethingHappened(value=i, correlation_id=f"agg-{i % 3}")) for i in range(20)]
        poison = outbox_write(SomethingHappened(value=99, mode="permanent"))  # dead-lettered: dlq.testing
    bus = Bus(secured.server)
    relay = bus.relay_process(env=secured.env("relay"))
    consumer = bus.consumer_process("testing", env=secured.env("consumer-testing"))
    try:
        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), 60, "the relay published")
        wait_for(lambda: Effect.objects.filter(consumer="testing").count() == 20, 60, "the consumer handled them")
        wait_for(lambda: stream_messages("DLQ") == 1, 30, "the consumer published its dead letter")
        wait_for(lambda: drained("TESTING", "testing"), 30)
    finally:
        relay_code, consumer_code = stop_process(relay), stop_process(consumer)
        relay_out, consumer_out = relay.stdout.read(), consumer.stdout.read()
    assert relay_code == 0, relay_out
    assert consumer_code == 0, consumer_out
    assert {row.message_id for row in events} == set(Effect.objects.values_list("message_id", flat=True))
    assert poison.message_id not in set(Effect.objects.values_list("message_id", flat=True))
    assert stream_messages("TESTING") == 21
    assert secured.violations() == [], "neither process needed anything its user may not do"
    assert "Violation" not in relay_out + consumer_out


def stream_messages(stream: str) -> int:
    return monitoring.call(lambda js: js.stream_info(stream)).state.messages


def drained(stream: str, durable: str) -> bool:
    info = monitoring.call(lambda js: js.consumer_info(stream, durable))
    return info.num_pending == 0 and info.num_ack_pending == 0


def test_the_web_user_reads_the_cockpit_state_probes_and_pauses_a_consumer(secured, settings):
    as_user(settings, secured, "web")
    check_nats()  # /readyz
    streams, consumers = monitoring.snapshot()
    assert {stream.name for stream in streams} == set(registry.streams)
    assert not any(consumer.missing for consumer in consumers)
    control.pause("testing")
    assert monitoring.call(lambda js: js.consumer_info("TESTING", "testing")).paused
    control.resume("testing")
    assert not monitoring.call(lambda js: js.consumer_info("TESTING", "testing")).paused
    assert secured.violations() == []


# -- what each role is refused ----------------------------------------------------------------------


def test_a_consumer_can_never_delete_or_purge_a_stream_nor_publish_a_domain_event(secured):
    async def scenario(client, errors):
        js = client.jetstream(timeout=0.5)  # the refusal (-ERR) comes at once; no answer follows
        refused = {}
        for action, attempt in {
            "delete": lambda: js.delete_stream("TESTING"),
            "purge": lambda: js.purge_stream("TESTING"),
            "delete a message": lambda: js.delete_msg("TESTING", 1),
            "update": lambda: client.request(  # keep one message: a purge in disguise
                "$JS.API.STREAM.UPDATE.TESTING", b'{"name": "TESTING", "subjects": ["testing.>"], "max_msgs": 1}', 0.5
            ),
            "read another consumer's durable": lambda: js.consumer_info("TESTING", "testing-other"),
            "publish a domain event": lambda: js.publish("testing.happened.v1", b"{}"),
        }.items():
            with pytest.raises(NatsTimeoutError):  # no answer: the server dropped the request
                await attempt()
            await asyncio.sleep(0.1)
            refused[action] = errors[-1] if errors else None
        # and what a runner does still works: its durables, its dead letters, the advisory path
        info = await js.consumer_info("TESTING", "testing")
        await js.pause_consumer("TESTING", "testing", "2099-01-01T00:00:00Z")
        await js.resume_consumer("TESTING", "testing")
        stored = await js.get_msg("TESTING", 1)
        advisories = await js.pull_subscribe_bind(durable="testing-advisories", stream="ADVISORIES")
        with pytest.raises(NatsTimeoutError):
            await advisories.fetch(1, timeout=0.5)  # none yet, and allowed
        dead_letter = await js.publish("dlq.testing", b"{}", stream="DLQ")
        return refused, (info.name, stored.subject, dead_letter.stream)

    secured.run("admin", _publish_one)
    (refused, own), _ = secured.run("consumer-testing", scenario)
    assert own == ("testing", "testing.happened.v1", "DLQ")
    assert refused == {
        "delete": 'nats: permissions violation for publish to "$js.api.stream.delete.testing"',
        "purge": 'nats: permissions violation for publish to "$js.api.stream.purge.testing"',
        "delete a message": 'nats: permissions violation for publish to "$js.api.stream.msg.delete.testing"',
        "update": 'nats: permissions violation for publish to "$js.api.stream.update.testing"',
        "read another consumer's durable": (
            'nats: permissions violation for publish to "$js.api.consumer.info.testing.testing-other"'
        ),
        "publish a domain event": 'nats: permissions violation for publish to "testing.happened.v1"',
    }
    assert secured.violations() == [
        ("consumer-testing", "Publish", subject)
        for subject in (
            "$JS.API.STREAM.DELETE.TESTING",
            "$JS.API.STREAM.PURGE.TESTING",
            "$JS.API.STREAM.MSG.DELETE.TESTING",
            "$JS.API.STREAM.UPDATE.TESTING",
            "$JS.API.CONSUMER.INFO.TESTING.testing-other",
            "testing.happened.v1",
        )
    ], "the server logged each refusal, and nothing else"
    assert stream_messages("TESTING") == 1, "the stream kept its message"


async def _publish_one(client, errors):
    await client.jetstream().publish("testing.happened.v1", SomethingHappened(value=1).to_json())


@pytest.mark.parametrize("user", ["relay", "web"])
def test_the_relay_and_web_users_cannot_consume_a_durable_nor_read_another_users_inbox(secured, user):
    async def scenario(client, errors):
        subscription = await client.jetstream(timeout=1).pull_subscribe_bind(durable="testing", stream="TESTING")
        with pytest.raises(NatsTimeoutError):
            await subscription.fetch(1, timeout=1)
        await asyncio.sleep(0.1)
        fetch = errors[-1] if errors else None
        await client.subscribe("_INBOX.consumer-testing.>")  # the consumer's fetched messages
        await client.subscribe("testing.>")
        return fetch

    secured.run("admin", _publish_one)
    fetch, errors = secured.run(user, scenario)
    assert fetch == 'nats: permissions violation for publish to "$js.api.consumer.msg.next.testing.testing"'
    assert 'nats: permissions violation for subscription to "_inbox.consumer-testing.>"' in errors
    assert 'nats: permissions violation for subscription to "testing.>"' in errors
    assert (user, "Subscription", "_INBOX.consumer-testing.>") in secured.violations()
    assert drained("TESTING", "testing") is False, "the message still waits for its consumer"


@pytest.mark.slow
def test_the_worker_user_reconciles_and_replays_but_cannot_consume_a_durable_create_one_or_destroy(
    secured, settings, transactional_db
):
    """The Celery worker's jobs as ``worker``: the outbox reconciliation (look-ups by sequence, a
    republish), a cockpit replay (an ephemeral consumer of its own), the stuck-orders job's look
    at the consumers; what it is refused (the name-less CONSUMER.CREATE too: the server takes the
    name from the body there and would update the durable it names)."""
    settings.EVENTBUS_RECONCILE = {**settings.EVENTBUS_RECONCILE, "SETTLE_SECONDS": 0}
    with transaction.atomic():
        written = [outbox_write(SomethingHappened(value=i, correlation_id=f"agg-{i}")) for i in range(5)]
    with Bus(secured.server).relay():  # as admin, the platform's user here
        wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), 30, "the relay published")
    lost = OutboxEvent.objects.get(pk=written[2].pk)
    monitoring.call(lambda js: js.delete_msg("TESTING", lost.stream_sequence))  # the stream lost it
    durable_before = monitoring.call(lambda js: js.consumer_info("TESTING", "testing")).config

    as_user(settings, secured, "worker")
    run = outbox_reconcile()  # STREAM.MSG.GET of each row's sequence, then the lost row republished
    outcomes = asyncio.run(replay(registry.consumer("testing"), "TESTING"))  # CONSUMER.CREATE.TESTING.<its own>
    _, states = monitoring.snapshot()  # the stuck-orders job: every declared consumer's state

    async def scenario(client, errors):
        js = client.jetstream(timeout=0.5)  # the server answers a refusal at once, with -ERR
        durable = await js.pull_subscribe_bind(durable="testing", stream="TESTING")
        body = {"stream_name": "TESTING", "config": {"name": "testing", "ack_policy": "explicit", "max_deliver": 1}}
        refused = {}
        for action, attempt in {
            "fetch from a declared durable": lambda: durable.fetch(1, timeout=0.5),
            "create a durable": lambda: js.add_consumer("TESTING", durable_name="worker-own", ack_policy="explicit"),
            "change a durable, named in the subject": lambda: js.add_consumer("TESTING", name="testing", max_deliver=1),
            # the name-less subject takes the name from the body, and would update the durable
            "change a durable, named in the body": lambda: client.request(
                "$JS.API.CONSUMER.CREATE.TESTING", json.dumps(body).encode(), 0.5
            ),
            "delete the stream": lambda: js.delete_stream("TESTING"),
            "purge the stream": lambda: js.purge_stream("TESTING"),
        }.items():
            with pytest.raises(NatsTimeoutError):  # no answer: the server dropped the request
                await attempt()
            await asyncio.sleep(0.1)
            refused[action] = errors[-1] if errors else None
        return refused

    refused, _ = secured.run("worker", scenario)
    as_user(settings, secured, "admin")

    assert (run.status, run.checked, run.missing, run.republished, run.failed) == ("completed", 5, 1, 1, 0)
    assert run.republished_ids == [lost.message_id]
    assert outcomes == {"handled": 5}, "the replay read the whole stream, the republished copy included"
    assert {state.name for state in states} == set(registry.consumers) and not any(state.missing for state in states)
    assert set(Effect.objects.filter(consumer="testing").values_list("message_id", flat=True)) == {
        row.message_id for row in written
    }
    expected = {
        "fetch from a declared durable": "$JS.API.CONSUMER.MSG.NEXT.TESTING.testing",
        "create a durable": "$JS.API.CONSUMER.DURABLE.CREATE.TESTING.worker-own",
        "change a durable, named in the subject": "$JS.API.CONSUMER.CREATE.TESTING.testing",
        "change a durable, named in the body": "$JS.API.CONSUMER.CREATE.TESTING",
        "delete the stream": "$JS.API.STREAM.DELETE.TESTING",
        "purge the stream": "$JS.API.STREAM.PURGE.TESTING",
    }
    assert refused == {
        action: f'nats: permissions violation for publish to "{subject.lower()}"'
        for action, subject in expected.items()
    }
    (replay_delete, *others) = secured.violations()
    assert re.fullmatch(r"\$JS\.API\.CONSUMER\.DELETE\.TESTING\.replay-testing-[0-9a-f]{12}", replay_delete[2])
    assert [replay_delete[:2], *others] == [
        ("worker", "Publish"),
        *(("worker", "Publish", subject) for subject in expected.values()),
    ], "its replay's consumer is left to expire (no process deletes consumers); nothing else was refused"
    replay_consumer = replay_delete[2].rsplit(".", 1)[1]
    consumers = {each.name for each in monitoring.call(lambda js: js.consumers_info("TESTING"))}
    declared = {durable for stream, durable in durables(registry) if stream == "TESTING"}
    assert consumers == declared | {replay_consumer}, "no durable was created"
    assert monitoring.call(lambda js: js.consumer_info("TESTING", "testing")).config == durable_before
    assert stream_messages("TESTING") == 5


def test_a_runner_that_may_not_provision_says_to_run_nats_setup(bus, settings):
    settings.EVENTBUS = {**settings.EVENTBUS, "PROVISION_AT_START": False}
    worker = bus.consumer("testing")  # the streams exist, its durables do not
    with pytest.raises(RuntimeError, match=r"durable testing on stream TESTING does not exist .* nats_setup"), worker:
        pass


# -- the generated configuration ----------------------------------------------------------------


def test_the_committed_auth_conf_is_what_the_registry_gives_and_the_server_accepts_it(tmp_path):
    """docker/nats/auth.conf cannot drift from the declarations (production settings: the
    registry without the tests' own app), and nats-server parses it."""
    env = clean_env(
        DJANGO_SETTINGS_MODULE="orders_platform.settings.production",
        SECRET_KEY="k" * 20 + secrets.token_hex(20),
        ALLOWED_HOSTS="localhost",
        DATABASE_URL="postgres://postgres@127.0.0.1:1/unused",
        NATS_URL="nats://127.0.0.1:1",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
    )
    result = manage("nats_auth", "--check", str(AUTH_CONF), env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    text = AUTH_CONF.read_text()
    (tmp_path / "auth.conf").write_text(text)
    (tmp_path / "node.conf").write_text("jetstream {}\ninclude auth.conf\n")
    variables = set(re.findall(r"password: \$(\w+)", text))
    assert {"NATS_PASSWORD_ADMIN", "NATS_PASSWORD_WEB", "NATS_PASSWORD_RELAY"} <= variables
    assert "NATS_PASSWORD_CONSUMER_TESTING" not in variables, "the tests' consumers are not deployed"
    checked = subprocess.run(
        [str(nats_server_binary()), "-c", str(tmp_path / "node.conf"), "-t"],
        env={**clean_env(), **{name: f"p{secrets.token_hex(8)}" for name in variables}},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_newly_declared_consumer_gets_its_permissions_without_a_hand_edit():
    with registry.override() as reg:
        reg.register_consumer(
            ConsumerSpec("brand-new", handlers={"testing.happened.v1": "tests.testapp.handlers.on_happened"})
        )
        by_name = {user.name: user for user in users(reg)}
        text = render(reg)
    new = by_name["consumer-brand-new"]
    assert new.password_variable == "NATS_PASSWORD_CONSUMER_BRAND_NEW"
    assert set(new.publish) == {
        "$JS.API.CONSUMER.MSG.NEXT.TESTING.brand-new",
        "$JS.API.CONSUMER.INFO.TESTING.brand-new",
        "$JS.ACK.TESTING.brand-new.>",
        "$JS.API.CONSUMER.PAUSE.TESTING.brand-new",
        "$JS.API.CONSUMER.MSG.NEXT.ADVISORIES.brand-new-advisories",
        "$JS.API.CONSUMER.INFO.ADVISORIES.brand-new-advisories",
        "$JS.ACK.ADVISORIES.brand-new-advisories.>",
        "$JS.API.STREAM.MSG.GET.TESTING",
        "$JS.API.DIRECT.GET.TESTING",
        "dlq.brand-new",
    }
    assert new.subscribe == ("_INBOX.consumer-brand-new.>",)
    assert "$JS.API.STREAM.DELETE.>" in new.publish_deny and "$JS.API.STREAM.PURGE.>" in new.publish_deny
    assert "$JS.API.CONSUMER.PAUSE.TESTING.brand-new" in by_name["web"].publish
    assert "consumer-brand-new" not in {user.name for user in users(registry)}
    assert '"dlq.brand-new"' in text and "password: $NATS_PASSWORD_CONSUMER_BRAND_NEW" in text
    relay = by_name["relay"].publish
    assert "testing.>" in relay and "redeliver.TESTING.>" in relay and "operator.>" in relay
    assert "dlq.>" not in relay and not any(subject.startswith("$JS.EVENT") for subject in relay)


def test_the_inbox_prefix_follows_the_user_unless_set(monkeypatch):
    from orders_platform.settings.nats import nats as nats_settings

    for name in ("NATS_USER", "NATS_INBOX_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    assert nats_settings(fallback=list)["INBOX_PREFIX"] == "_INBOX"
    monkeypatch.setenv("NATS_USER", "consumer-orders")
    assert nats_settings(fallback=list)["INBOX_PREFIX"] == "_INBOX.consumer-orders"
    monkeypatch.setenv("NATS_INBOX_PREFIX", "_INBOX.custom")
    assert nats_settings(fallback=list)["INBOX_PREFIX"] == "_INBOX.custom"
    monkeypatch.setenv("NATS_INBOX_PREFIX", "_INBOX.*")
    with pytest.raises(Exception, match="NATS_INBOX_PREFIX"):
        nats_settings(fallback=list)


# -- TLS, optional and beside the users ---------------------------------------------------------


def _certificates(folder) -> dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=orders-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "server.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return {name: str(folder / f"{name}") for name in ("ca.pem", "server.pem", "server.key")}


def test_tls_and_a_user_from_settings_together(tmp_path, settings):
    """The documented way to turn TLS on: a ``tls`` block on the server, ``NATS_TLS_CA`` on the client."""
    (tmp_path / "certs").mkdir()
    certs = _certificates(tmp_path / "certs")
    password = f"p{secrets.token_hex(16)}"
    tls = f'tls {{\n  cert_file: "{certs["server.pem"]}"\n  key_file: "{certs["server.key"]}"\n}}\n'
    env = {user.password_variable: password for user in users(registry)}
    server = NatsServer(tmp_path / "nats", config=tls + render(registry), env=env).start()
    try:
        settings.NATS = {**settings.NATS, "SERVERS": [server.url], "USER": "web", "PASSWORD": password}
        settings.NATS["INBOX_PREFIX"] = inbox_prefix("web")
        with pytest.raises(monitoring.NatsUnreachable) as untrusted:
            check_nats()  # no CA: the server's certificate is not trusted
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value), str(untrusted.value)
        settings.NATS = {**settings.NATS, "TLS_CA": certs["ca.pem"]}
        check_nats()
        assert server.monitor("varz")["tls_required"] is True
        settings.NATS = {**settings.NATS, "PASSWORD": "p-wrong"}
        with pytest.raises(monitoring.NatsUnreachable, match="Authorization Violation"):
            check_nats()
    finally:
        server.stop()
