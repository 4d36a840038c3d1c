"""Liveness and readiness probes.

``/healthz``: the process answers. ``/readyz``: it can do its work, meaning PostgreSQL
answers a query and NATS accepts a connection with JetStream enabled; 503 with the
failing check's reason otherwise, so a load balancer stops routing here.
"""

from __future__ import annotations

import time

from django.db import DEFAULT_DB_ALIAS, connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.eventbus.jetstream import monitoring


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    checks = {"database": _timed(check_database), "nats": _timed(check_nats)}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def check_database() -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close_if_unusable_or_obsolete()


def check_nats() -> None:
    """Raises ``NatsUnreachable`` with the reason."""
    monitoring.call(lambda js: js.account_info())


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure makes the probe fail, with its reason
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()}
    else:
        result = {"ok": True}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result
