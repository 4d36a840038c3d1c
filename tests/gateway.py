"""The payment gateway simulator as a real child process, for the tests that need one."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request

from orders_platform.embedded.procs import free_port
from tests.support import PYTHON, ROOT, clean_env, wait_for_status


class Gateway:
    def __init__(self, ledger) -> None:
        self.ledger, self.port, self.process = ledger, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        env = clean_env(DJANGO_SETTINGS_MODULE="orders_platform.settings.test")
        self.process = subprocess.Popen(
            [PYTHON, "manage.py", "rungateway", "--port", str(self.port), "--ledger", str(self.ledger)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert wait_for_status(f"{self.url}/healthz", 200, timeout=60), self.process.stdout.read()
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def call(self, method: str, path: str, body: dict | None = None, key: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Idempotency-Key", key)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc), dict(exc.headers)

    def charge(self, key: str, amount: str = "12.30", reference: str = "order-1"):
        return self.call("POST", "/v1/charges", {"amount": amount, "currency": "EUR", "reference": reference}, key)

    def control(self, **values):
        status, body, _ = self.call("PUT", "/_control", values)
        assert status == 200, body
        return body


def charges(gateway: Gateway, reference) -> list[dict]:
    """The charges the simulator holds for one reference (an order id)."""
    return gateway.call("GET", f"/v1/charges?reference={reference}")[1]["data"]
