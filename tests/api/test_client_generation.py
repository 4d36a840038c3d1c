"""A Python client generated from the live schema with openapi-python-client, as an API user
would: it generates with no warning, every one of its modules imports, and it gets a token and
places an order (without a currency) against the live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import make_user, password_of

PACKAGE = "orders_api_client"
BIN = Path(sys.executable).parent  # openapi-python-client, and the ruff it formats its output with
USE_THE_CLIENT = f"""
import importlib, json, pkgutil, sys, uuid

import {PACKAGE} as package

modules, failures = [], {{}}
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        failures[module.name] = f"{{type(exc).__name__}}: {{exc}}"
    modules.append(module.name)
print(json.dumps({{"modules": modules, "failures": failures}}))
if failures:
    sys.exit(0)

from {PACKAGE} import AuthenticatedClient, Client
from {PACKAGE}.api.auth import auth_token_create
from {PACKAGE}.api.orders import orders_create
from {PACKAGE}.models import NewOrderLineRequest, OrderCreateRequest, TokenCreateRequest

base_url, username, password = sys.argv[1:]
token = auth_token_create.sync(client=Client(base_url=base_url), body=TokenCreateRequest(username, password))
api = AuthenticatedClient(base_url=base_url, token=token.token, prefix="Token")
order = orders_create.sync(
    client=api,
    body=OrderCreateRequest(lines=[NewOrderLineRequest(sku="KB-001", quantity=2)]),
    idempotency_key=str(uuid.uuid4()),
)
print(json.dumps({{"status": str(order.status), "currency": order.currency, "total": order.total_amount}}))
"""


def run(*command, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_a_client_generated_from_the_schema_imports_and_places_an_order(live_server, catalogue, tmp_path):
    make_user("carol")

    generated = run(
        BIN / "openapi-python-client", "generate", "--url", f"{live_server.url}/api/schema/",
        "--meta", "none", "--output-path", str(tmp_path / PACKAGE), "--fail-on-warning",
        cwd=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    used = run(sys.executable, "-c", USE_THE_CLIENT, live_server.url, "carol", password_of("carol"), cwd=tmp_path)

    assert used.returncode == 0, used.stdout + used.stderr
    imports, *placed = [json.loads(line) for line in used.stdout.splitlines()]
    assert imports["failures"] == {}, "modules of the generated client that do not import"
    assert {f"{PACKAGE}.api.auth.auth_token_create", f"{PACKAGE}.api.orders.orders_create"} <= set(imports["modules"])
    assert len(imports["modules"]) > 40
    assert placed == [{"status": "PENDING", "currency": "EUR", "total": "179.80"}]
