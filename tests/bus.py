"""Helpers for tests of anything that flows through the event bus: a real nats-server per
test, the test database committed for real (other threads and processes read it), and
runners in threads or in child processes. The ``bus`` fixture is in tests/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import threading

import nats
from nats.js.errors import NotFoundError

from apps.eventbus.consuming.runner import ConsumerRunner
from apps.eventbus.producing.relay import Relay
from apps.eventbus.registry import registry
from orders_platform.embedded.procs import wait_until
from tests.support import PYTHON, ROOT, child_database_url, clean_env


class BackgroundWorker:
    """Runs a Relay or ConsumerRunner on its own event loop in a thread."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main():
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self._started.set()
            await self.worker.run(self.stop_event)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
            self._started.set()

    def __enter__(self) -> BackgroundWorker:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and hasattr(self, "loop"):
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error:
            raise self.error

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Bus:
    def __init__(self, server) -> None:
        self.server = server

    # -- NATS, from the test thread ---------------------------------------------------

    def call(self, make_coro):
        """Run ``make_coro(js)`` on a fresh connection and return its result."""

        async def main():
            async def quiet(*_):
                pass

            client = await nats.connect(self.server.url, error_cb=quiet, connect_timeout=2)
            try:
                return await make_coro(client.jetstream())
            finally:
                await client.close()

        return asyncio.run(main())

    def setup_streams(self) -> None:
        from apps.eventbus.jetstream.provisioning import ensure_stream

        async def ensure(js):
            for spec in registry.streams.values():
                await ensure_stream(js, spec)

        self.call(ensure)

    def publish(self, subject: str, data: bytes | dict, headers: dict | None = None, msg_id: str | None = None):
        body = json.dumps(data).encode() if isinstance(data, dict) else data
        headers = dict(headers or {})
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        return self.call(lambda js: js.publish(subject, body, headers=headers or None))

    def publish_event(self, event, msg_id: str | None = None):
        return self.publish(event.subject, event.to_json(), msg_id=msg_id or event.message_id)

    def stream_messages(self, stream: str) -> int:
        return self.call(lambda js: js.stream_info(stream)).state.messages

    def get(self, stream: str, seq: int):
        return self.call(lambda js: js.get_msg(stream, seq))

    def consumer_info(self, stream: str, consumer: str):
        return self.call(lambda js: js.consumer_info(stream, consumer))

    def drained(self, stream: str, consumer: str) -> bool:
        """The consumer exists and has nothing pending or unacknowledged."""
        try:
            info = self.consumer_info(stream, consumer)
        except NotFoundError:
            return False
        return info.num_pending == 0 and info.num_ack_pending == 0

    # -- workers ------------------------------------------------------------------------

    def consumer(self, name: str, **kwargs) -> BackgroundWorker:
        return BackgroundWorker(ConsumerRunner(registry.consumer(name), **kwargs))

    def relay(self, batch_size: int = 500) -> BackgroundWorker:
        return BackgroundWorker(Relay(batch_size=batch_size, poll_interval=0.2))

    @contextlib.contextmanager
    def running(self, *consumers: str):
        """The relay and the named consumers, each in a thread, for the duration of the block."""
        with contextlib.ExitStack() as stack:
            for worker in (self.relay(), *(self.consumer(name) for name in consumers)):
                stack.enter_context(worker)
            yield

    def consumer_process(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        """``manage.py runconsumer NAME`` as a child process (``outbox``: the relay, by its alias)."""
        return self.process("runconsumer", name, *args, env=env)

    def relay_process(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        """``manage.py runrelay`` as a child process."""
        return self.process("runrelay", *args, env=env)

    def process(self, *command: str, env: dict | None = None) -> subprocess.Popen:
        env = clean_env(
            DJANGO_SETTINGS_MODULE="orders_platform.settings.test",
            TEST_DATABASE_URL=child_database_url(),
            NATS_URL=self.server.url,
            **(env or {}),
        )
        return subprocess.Popen(
            [PYTHON, "manage.py", *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_for(predicate, timeout: float = 30, message: str = "") -> None:
    assert wait_until(predicate, timeout=timeout, interval=0.05), message or "condition not met in time"


def stop_process(process: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30) -> int:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    return process.wait(timeout=timeout)


def decided(order_id, timeout: float = 30):
    """The order once the saga has decided it (no longer PENDING)."""
    from apps.orders.models import Order

    wait_for(lambda: Order.objects.get(pk=order_id).status != "PENDING", timeout=timeout)
    return Order.objects.get(pk=order_id)


def final(order, timeout: float = 30) -> str:
    """The order's status once decided (``order`` is refreshed)."""
    decided(order.pk, timeout)
    order.refresh_from_db()
    return order.status
