"""``make run``'s web process: gunicorn, the server production runs (docker/), not ``runserver``.

Several sync workers (``WEB_CONCURRENCY``; ``WEB_THREADS`` > 1 makes them gthread workers),
each its own Django process, so the platform a developer starts takes the load the
benchmarks measure. Static files (the admin's, Swagger UI's) come from WhiteNoise
(development settings). ``WEB_RELOAD`` adds gunicorn's ``--reload``: every worker restarts
when a Python module it loaded changes. No access log unless ``WEB_ACCESS_LOG``; gunicorn's
error log and Django's own logging (5xx tracebacks, 4xx warnings) go to the console.

Stopping: the supervisor sends SIGTERM to the master, which stops its workers within
``--graceful-timeout`` (shorter than the supervisor's grace); whatever is left is killed
with the process group. A worker that dies is replaced by the master; a master that dies
is restarted by the supervisor.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .supervisor import Program

MAX_DEFAULT_WORKERS = 8
GUNICORN_CONFIG = "orders_platform.gunicorn_config"
GRACEFUL_TIMEOUT = 5  # seconds; the supervisor kills the group after 10


def default_workers() -> int:
    """2 x cores + 1 (gunicorn's advice), at most ``MAX_DEFAULT_WORKERS``."""
    return min(2 * (os.cpu_count() or 1) + 1, MAX_DEFAULT_WORKERS)


def bind_address(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


def web_program(
    *, host: str, port: int, workers: int, threads: int = 1, reload: bool = False, access_log: bool = False
) -> Program:
    argv = [
        sys.executable, "-m", "gunicorn", "orders_platform.wsgi:application",
        "--config", f"python:{GUNICORN_CONFIG}",  # worker hooks, JSON logs (LOG_FORMAT)
        "--bind", bind_address(host, port),
        "--workers", str(workers),
        "--threads", str(threads),  # > 1: the gthread worker
        "--graceful-timeout", str(GRACEFUL_TIMEOUT),
        "--no-control-socket",  # its default path is per user: two platforms would share it
        "--log-level", "info",
    ]  # fmt: skip
    if Path("/dev/shm").is_dir():
        argv += ["--worker-tmp-dir", "/dev/shm"]  # heartbeat files off a disk that may stall
    if reload:
        argv.append("--reload")
    if access_log:
        argv += ["--access-logfile", "-"]
    return Program("web", argv)
