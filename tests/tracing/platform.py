"""The platform's processes for the tracing and logging tests: the web (gunicorn, as ``make run``
and the image run it), the relay, consumers and the gateway simulator, each a real child
process with the test database and nats-server, every one exporting its spans to one file and,
with ``LOG_FORMAT=json``, logging JSON lines; and a reader for that file."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from orders_platform import webserver
from orders_platform.embedded.procs import LOOPBACK, free_port
from tests.gateway import Gateway
from tests.platform.test_supervisor import Output
from tests.support import ROOT, child_database_url, clean_env, wait_for_status

SKU = "TRACE-1"


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    service: str
    attributes: dict
    links: tuple[tuple[str, str], ...]  # (trace id, span id)

    @classmethod
    def from_line(cls, line: str) -> Span:
        data = json.loads(line)
        return cls(
            name=data["name"],
            trace_id=data["context"]["trace_id"].removeprefix("0x"),
            span_id=data["context"]["span_id"].removeprefix("0x"),
            parent_id=(data["parent_id"] or "").removeprefix("0x") or None,
            kind=data["kind"].removeprefix("SpanKind."),
            service=data["resource"]["attributes"]["service.name"],
            attributes=data["attributes"],
            links=tuple(
                (link["context"]["trace_id"].removeprefix("0x"), link["context"]["span_id"].removeprefix("0x"))
                for link in data["links"]
            ),
        )


def read_spans(path: Path) -> list[Span]:
    """Every span in the file; every line must be one whole span."""
    if not path.exists():
        return []
    return [Span.from_line(line) for line in path.read_text().splitlines()]


def trace_of(headers: dict) -> tuple[str, str]:
    """(trace id, span id) of a ``traceparent`` header."""
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return trace_id, span_id


class Platform:
    """Child processes started by a test, stopped (SIGTERM, then SIGKILL) when it ends."""

    def __init__(self, bus, tmp_path: Path, **env: str) -> None:
        self.bus = bus
        self.spans_file = tmp_path / "spans.jsonl"
        self.tmp_path = tmp_path
        self.env = {
            "OTEL_TRACES_EXPORTER": "file",
            "OTEL_EXPORTER_FILE_PATH": str(self.spans_file),
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "LOG_FORMAT": "json",
            **env,
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.outputs: dict[str, Output] = {}
        self.gateway: Gateway | None = None

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start_gateway(self) -> Gateway:
        self.gateway = Gateway(self.tmp_path / "gateway-ledger.jsonl").start()
        self.env["PAYMENT_GATEWAY_URL"] = self.gateway.url
        return self.gateway

    def start_web(self) -> str:
        """gunicorn with one worker (``make run``'s command line); its base URL once it answers."""
        port = free_port()
        program = webserver.web_program(host=LOOPBACK, port=port, workers=1)
        env = clean_env(
            DJANGO_SETTINGS_MODULE="orders_platform.settings.test",
            TEST_DATABASE_URL=child_database_url(),
            NATS_URL=self.bus.server.url,
            **self.env,
        )
        process = subprocess.Popen(
            program.argv, cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self._track("web", process)
        base = f"http://{LOOPBACK}:{port}"
        assert wait_for_status(f"{base}/healthz", 200, timeout=60), "\n".join(self.outputs["web"].lines)
        return base

    def start_relay(self) -> None:
        self._track("relay", self.bus.relay_process(env=self.env))

    def start_consumer(self, name: str) -> None:
        self._track(name, self.bus.consumer_process(name, env=self.env))

    def _track(self, name: str, process: subprocess.Popen) -> None:
        self.processes[name] = process
        self.outputs[name] = Output(process)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.gateway is not None and self.gateway.process.poll() is None:
            self.gateway.stop()

    def lines(self, name: str) -> list[str]:
        return [line for line in self.outputs[name].lines if line.strip()]


def seed_catalogue_and_token() -> str:
    """The product the orders buy, and a customer's API token."""
    from django.contrib.auth import get_user_model

    from apps.api.services import auth_token_issue
    from apps.inventory.services import product_ensure

    product_ensure(sku=SKU, name="Traced", price=Decimal("12.50"), stock_on_hand=100)
    user = get_user_model().objects.create_user("tracy", "tracy@example.com", "pw-tracy")
    return auth_token_issue(user=user).key


def post_order(base: str, token: str, key: str) -> str:
    """``POST /api/orders/`` as a client does; the new order's id."""
    body = json.dumps({"lines": [{"sku": SKU, "quantity": 1}]}).encode()
    request = urllib.request.Request(f"{base}/api/orders/", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Token {token}")
    request.add_header("Idempotency-Key", key)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.load(response)["id"]


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
