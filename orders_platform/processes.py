"""Every long-running process of the platform, as ``make run`` starts them.

Domain consumers join here as they are built; production runs the same commands as
separate deployments (and talks to a real payment provider instead of the simulator).
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from django.conf import settings

from .supervisor import Program


def platform_programs(*, host: str, port: int) -> list[Program]:
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    gateway = urlsplit(settings.PAYMENT_GATEWAY_URL)
    celery = [sys.executable, "-m", "celery", "--app", "orders_platform", "--quiet"]
    return [
        Program("web", [*manage, "runserver", f"{host}:{port}"]),
        Program("relay", [*manage, "runconsumer", "outbox"]),
        Program("dead-letters", [*manage, "runconsumer", "dead-letters"]),
        Program("inventory", [*manage, "runconsumer", "inventory"]),
        Program("payments", [*manage, "runconsumer", "payments"]),
        Program("orders", [*manage, "runconsumer", "orders"]),
        Program("audit", [*manage, "runconsumer", "audit"]),
        Program("gateway", [*manage, "rungateway", "--host", gateway.hostname, "--port", str(gateway.port or 80)]),
        Program("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "worker@%h"]),
        Program("beat", [*celery, "beat", "--loglevel", "INFO"]),
    ]
