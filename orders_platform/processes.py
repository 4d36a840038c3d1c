"""Every long-running process of the platform, as ``make run`` starts them.

Domain consumers and the payment gateway join here as they are built; production runs
the same commands as separate deployments.
"""

from __future__ import annotations

import sys

from django.conf import settings

from .supervisor import Program


def platform_programs(*, host: str, port: int) -> list[Program]:
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    celery = [sys.executable, "-m", "celery", "--app", "orders_platform", "--quiet"]
    return [
        Program("web", [*manage, "runserver", f"{host}:{port}"]),
        Program("relay", [*manage, "runconsumer", "outbox"]),
        Program("dead-letters", [*manage, "runconsumer", "dead-letters"]),
        Program("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "worker@%h"]),
        Program("beat", [*celery, "beat", "--loglevel", "INFO"]),
    ]
