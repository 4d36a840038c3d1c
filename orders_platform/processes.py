"""Every long-running process of the platform, as ``make run`` starts them.

Domain consumers join here as they are built; production runs the same commands as
separate deployments (and talks to a real payment provider instead of the simulator).
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from django.conf import settings

from .supervisor import Program
from .webserver import default_workers, web_program


def platform_programs(*, host: str, port: int) -> list[Program]:
    """The web process is gunicorn with the ``WEB_*`` settings of the development settings."""
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    gateway = urlsplit(settings.PAYMENT_GATEWAY_URL)
    celery = [sys.executable, "-m", "celery", "--app", "orders_platform", "--quiet"]
    return [
        web_program(host=host, port=port, **web_options()),
        Program("relay", [*manage, "runrelay"]),
        Program("dead-letters", [*manage, "runconsumer", "dead-letters"]),
        Program("inventory", [*manage, "runconsumer", "inventory"]),
        Program("payments", [*manage, "runconsumer", "payments"]),
        Program("orders", [*manage, "runconsumer", "orders"]),
        Program("saga-failures", [*manage, "runconsumer", "saga-failures"]),
        Program("audit", [*manage, "runconsumer", "audit"]),
        Program("gateway", [*manage, "rungateway", "--host", gateway.hostname, "--port", str(gateway.port or 80)]),
        Program("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "worker@%h"]),
        Program("beat", [*celery, "beat", "--loglevel", "INFO"]),
    ]


def web_options() -> dict:
    """The web process's options from the settings (defaults where the settings have none)."""
    return {
        "workers": getattr(settings, "WEB_CONCURRENCY", default_workers()),
        "threads": getattr(settings, "WEB_THREADS", 1),
        "reload": getattr(settings, "WEB_RELOAD", False),
        "access_log": getattr(settings, "WEB_ACCESS_LOG", False),
    }
