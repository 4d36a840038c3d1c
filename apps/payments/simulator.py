"""A payment provider simulator: its own HTTP process, its own ledger.

It behaves like the providers the platform will meet in production:

- ``POST /v1/charges`` and ``POST /v1/refunds`` take an ``Idempotency-Key`` header. A repeated
  key returns the first response (status and body); the same key with a different request
  is refused with 422 ``idempotency_key_reused``; two concurrent requests with one key
  produce one charge.
- Latency, decline rate, throttling (429 with ``Retry-After``) and an outage (503) are set at
  run time through ``PUT /_control`` (and read with ``GET /_control``).
- ``GET /_stats`` says how many charge and refund requests it has seen and the most it had in
  flight at once (``DELETE /_stats`` starts counting again): how a test sees concurrency.
- The ledger is an append-only JSON-lines file, fsync'ed before a response is sent, so
  charges and idempotency keys survive a restart (and a kill -9).

Amounts are decimal strings in the currency's major unit (``"12.30"``); never floats.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024


@dataclass
class Controls:
    latency_ms: int = 0
    decline_rate: float = 0.0
    throttle_rate: float = 0.0  # share of requests answered 429
    retry_after: int = 1
    outage: bool = False

    def update(self, values: dict) -> None:
        for name, kind in (
            ("latency_ms", int),
            ("decline_rate", float),
            ("throttle_rate", float),
            ("retry_after", int),
        ):
            if name in values:
                value = kind(values[name])
                if value < 0 or (name.endswith("_rate") and value > 1):
                    raise ValueError(f"{name} out of range: {value}")
                setattr(self, name, value)
        if "outage" in values:
            if not isinstance(values["outage"], bool):
                raise ValueError("outage must be true or false")
            self.outage = values["outage"]


@dataclass
class Ledger:
    """Charges, refunds and the responses given to each idempotency key, persisted as JSON lines."""

    path: Path
    charges: dict[str, dict] = field(default_factory=dict)
    refunds: dict[str, dict] = field(default_factory=dict)
    responses: dict[str, dict] = field(default_factory=dict)  # "<endpoint>:<key>" -> {request, status, body}

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    self._apply(json.loads(line))
        self._file = self.path.open("a")

    def record(self, entry: dict) -> None:
        self._file.write(json.dumps(entry, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._apply(entry)

    def _apply(self, entry: dict) -> None:
        kind = entry["kind"]
        if kind == "charge":
            self.charges[entry["object"]["id"]] = entry["object"]
        elif kind == "refund":
            self.refunds[entry["object"]["id"]] = entry["object"]
            charge = self.charges[entry["object"]["charge"]]
            charge["amount_refunded"] = str(Decimal(charge["amount_refunded"]) + Decimal(entry["object"]["amount"]))
        self.responses[entry["idempotency"]] = {
            "request": entry["request"],
            "status": entry["status"],
            "body": entry["object"],
        }


class Stats:
    """Charge and refund requests seen, and the most in flight at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.in_flight = self.max_in_flight = 0

    def enter(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset(self) -> None:
        with self._lock:
            self.requests, self.max_in_flight = 0, self.in_flight

    def as_dict(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Gateway:
    def __init__(self, ledger_path: Path, controls: Controls | None = None, seed: int | None = None) -> None:
        self.ledger = Ledger(ledger_path)
        self.controls = controls or Controls()
        self.random = random.Random(seed)
        self.stats = Stats()
        self._lock = threading.Lock()  # one write at a time: simple and enough for a simulator
        self._key_locks: dict[str, threading.Lock] = {}

    def charge(self, key: str, request: dict) -> tuple[int, dict]:
        amount = _amount(request.get("amount"))
        currency = _currency(request.get("currency"))
        reference = str(request.get("reference") or "")
        normalised = {"amount": str(amount), "currency": currency, "reference": reference}
        return self._idempotent(f"charge:{key}", normalised, lambda: self._new_charge(normalised))

    def refund(self, key: str, request: dict) -> tuple[int, dict]:
        charge_id = str(request.get("charge") or "")
        amount = _amount(request.get("amount"))
        normalised = {"charge": charge_id, "amount": str(amount)}
        return self._idempotent(f"refund:{key}", normalised, lambda: self._new_refund(normalised))

    def _idempotent(self, slot: str, request: dict, create) -> tuple[int, dict]:
        with self._lock:
            key_lock = self._key_locks.setdefault(slot, threading.Lock())
        with key_lock:
            previous = self.ledger.responses.get(slot)
            if previous is not None:
                if previous["request"] != request:
                    raise GatewayError(
                        HTTPStatus.UNPROCESSABLE_ENTITY,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request",
                    )
                return previous["status"], previous["body"]
            status, kind, obj = create()
            with self._lock:
                self.ledger.record(
                    {"kind": kind, "idempotency": slot, "request": request, "status": status, "object": obj}
                )
            return status, obj

    def _new_charge(self, request: dict) -> tuple[int, str, dict]:
        declined = self.random.random() < self.controls.decline_rate
        charge = {
            "id": f"ch_{uuid.uuid4().hex[:24]}",
            "object": "charge",
            "amount": request["amount"],
            "amount_refunded": "0",
            "currency": request["currency"],
            "reference": request["reference"],
            "status": "declined" if declined else "succeeded",
            "decline_code": "card_declined" if declined else None,
            "created": time.time(),
        }
        return (HTTPStatus.PAYMENT_REQUIRED if declined else HTTPStatus.CREATED), "charge", charge

    def _new_refund(self, request: dict) -> tuple[int, str, dict]:
        charge = self.ledger.charges.get(request["charge"])
        if charge is None:
            raise GatewayError(HTTPStatus.NOT_FOUND, "no_such_charge", f"no charge {request['charge']}")
        if charge["status"] != "succeeded":
            raise GatewayError(
                HTTPStatus.UNPROCESSABLE_ENTITY, "charge_not_captured", "only a succeeded charge refunds"
            )
        remaining = Decimal(charge["amount"]) - Decimal(charge["amount_refunded"])
        if Decimal(request["amount"]) > remaining:
            raise GatewayError(
                HTTPStatus.UNPROCESSABLE_ENTITY, "amount_too_large", f"at most {remaining} can still be refunded"
            )
        refund = {
            "id": f"re_{uuid.uuid4().hex[:24]}",
            "object": "refund",
            "charge": charge["id"],
            "amount": request["amount"],
            "status": "succeeded",
            "created": time.time(),
        }
        return HTTPStatus.CREATED, "refund", refund

    def charges_for(self, reference: str | None) -> list[dict]:
        return [c for c in self.ledger.charges.values() if reference is None or c["reference"] == reference]


def _amount(value) -> Decimal:
    problem = f"amount must be a positive decimal string with at most 2 decimals; got {value!r}"
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise GatewayError(HTTPStatus.BAD_REQUEST, "invalid_amount", problem) from None
    if not amount.is_finite() or amount <= 0 or amount.as_tuple().exponent < -2:
        raise GatewayError(HTTPStatus.BAD_REQUEST, "invalid_amount", problem)
    return amount.quantize(Decimal("0.01"))


def _currency(value) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        problem = f"currency must be an ISO 4217 code; got {value!r}"
        raise GatewayError(HTTPStatus.BAD_REQUEST, "invalid_currency", problem)
    return value.upper()


def make_handler(gateway: Gateway):
    class Handler(BaseHTTPRequestHandler):
        server_version = "PaymentGatewaySimulator/1.0"

        def log_message(self, format, *args):
            if os.environ.get("GATEWAY_ACCESS_LOG"):
                super().log_message(format, *args)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/_control":
                return self._send(HTTPStatus.OK, asdict(gateway.controls))
            if url.path == "/_stats":
                return self._send(HTTPStatus.OK, gateway.stats.as_dict())
            if url.path == "/healthz":
                return self._send(HTTPStatus.OK, {"status": "ok"})
            if url.path == "/v1/charges":
                reference = parse_qs(url.query).get("reference", [None])[0]
                return self._send(HTTPStatus.OK, {"data": gateway.charges_for(reference)})
            if url.path.startswith("/v1/charges/"):
                charge = gateway.ledger.charges.get(url.path.rsplit("/", 1)[1])
                if charge is None:
                    return self._error(GatewayError(HTTPStatus.NOT_FOUND, "no_such_charge", "no such charge"))
                return self._send(HTTPStatus.OK, charge)
            return self._error(GatewayError(HTTPStatus.NOT_FOUND, "not_found", f"no route {url.path}"))

        def do_DELETE(self):
            if urlsplit(self.path).path != "/_stats":
                return self._error(GatewayError(HTTPStatus.NOT_FOUND, "not_found", "no such route"))
            gateway.stats.reset()
            return self._send(HTTPStatus.OK, gateway.stats.as_dict())

        def do_PUT(self):
            if urlsplit(self.path).path != "/_control":
                return self._error(GatewayError(HTTPStatus.NOT_FOUND, "not_found", "no such route"))
            try:
                gateway.controls.update(self._body())
            except (ValueError, TypeError) as exc:
                return self._error(GatewayError(HTTPStatus.BAD_REQUEST, "invalid_control", str(exc)))
            except GatewayError as exc:
                return self._error(exc)
            return self._send(HTTPStatus.OK, asdict(gateway.controls))

        def do_POST(self):
            path = urlsplit(self.path).path
            operations = {"/v1/charges": gateway.charge, "/v1/refunds": gateway.refund}
            if path not in operations:
                return self._error(GatewayError(HTTPStatus.NOT_FOUND, "not_found", f"no route {path}"))
            gateway.stats.enter()
            try:
                self._operate(operations[path])
            finally:
                gateway.stats.leave()

        def _operate(self, operation) -> None:
            controls = gateway.controls
            if controls.latency_ms:
                time.sleep(controls.latency_ms / 1000)
            if controls.outage:
                return self._error(GatewayError(HTTPStatus.SERVICE_UNAVAILABLE, "outage", "the provider is down"))
            if controls.throttle_rate and gateway.random.random() < controls.throttle_rate:
                return self._error(
                    GatewayError(HTTPStatus.TOO_MANY_REQUESTS, "rate_limited", "slow down"),
                    headers={"Retry-After": str(controls.retry_after)},
                )
            key = self.headers.get("Idempotency-Key", "").strip()
            if not key or len(key) > 255:
                return self._error(
                    GatewayError(HTTPStatus.BAD_REQUEST, "idempotency_key_required", "send an Idempotency-Key header")
                )
            try:
                status, body = operation(key, self._body())
            except GatewayError as exc:
                return self._error(exc)
            self._send(status, body)

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise GatewayError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body_too_large", "request body too large")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                raise GatewayError(HTTPStatus.BAD_REQUEST, "invalid_json", "the body is not JSON") from None
            if not isinstance(body, dict):
                raise GatewayError(HTTPStatus.BAD_REQUEST, "invalid_json", "the body must be a JSON object")
            return body

        def _error(self, exc: GatewayError, headers: dict | None = None) -> None:
            self._send(exc.status, {"error": {"code": exc.code, "message": exc.message}}, headers)

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def serve(host: str, port: int, ledger_path: Path, controls: Controls | None = None) -> ThreadingHTTPServer:
    """A server bound and ready; the caller runs ``serve_forever()``."""
    return _Server((host, port), make_handler(Gateway(ledger_path, controls)))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: clients send many requests at once (default 5)
