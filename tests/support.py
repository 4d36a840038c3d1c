"""Helpers for tests that run the platform's own commands as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from orders_platform.embedded.procs import wait_until

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Variables a developer's shell may carry that would change what a child process configures.
_PLATFORM_VARIABLES = (
    "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "NATS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG",
    "ALLOWED_HOSTS", "PLATFORM_DATA_DIR", "WEB_PORT", "PAYMENT_GATEWAY_URL", "PAYMENT_GATEWAY_CONCURRENCY",
    "WEB_CONCURRENCY", "WEB_THREADS", "WEB_RELOAD", "WEB_ACCESS_LOG",
)  # fmt: skip


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without the platform's variables, plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if key not in _PLATFORM_VARIABLES}
    env.update(overrides)
    return env


def development_check(data_dir, **overrides: str) -> subprocess.CompletedProcess:
    """``manage.py check`` under the development settings with ``overrides`` (servers unreachable:
    only the settings are read)."""
    env = clean_env(
        DJANGO_SETTINGS_MODULE="orders_platform.settings.development",
        PLATFORM_DATA_DIR=str(data_dir),
        DATABASE_URL="postgres://postgres@127.0.0.1:1/unused",
        NATS_URL="nats://127.0.0.1:1",
    )
    env.update(overrides)
    return manage("check", env=env)


def manage(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def http_status(url: str, timeout: float = 5) -> int | None:
    """The HTTP status of GET ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for_status(url: str, status: int, timeout: float) -> bool:
    return wait_until(lambda: http_status(url, timeout=2) == status, timeout=timeout, interval=0.2)


def other_session(*, autocommit: bool = True):
    """A second PostgreSQL session on the test's database (another worker, another relay):
    psycopg's own connection, opened with Django's parameters."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=autocommit)


def child_database_url() -> str:
    """The URL of the database pytest-django created, for child processes of a test."""
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_celery_worker(**extra_env: str) -> subprocess.Popen:
    """A real Celery worker process on the test database and the test broker (kombu's
    filesystem transport under the session's data folder), answering pings; ``extra_env`` adds
    variables (``LOG_FORMAT``, ``OTEL_TRACES_EXPORTER``...)."""
    env = clean_env(
        DJANGO_SETTINGS_MODULE="orders_platform.settings.test",
        TEST_DATABASE_URL=child_database_url(),
        PLATFORM_DATA_DIR=os.environ["PLATFORM_DATA_DIR"],
        **extra_env,
    )
    hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
    worker = subprocess.Popen(
        [PYTHON, "-m", "celery", "--app", "orders_platform", "worker", "--pool", "solo", "--loglevel", "INFO",
         "--hostname", hostname, "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def answers_ping() -> bool:
        return any(hostname in reply for reply in celery_app.control.ping(destination=[hostname], timeout=0.5))

    from orders_platform import celery_app

    if not wait_until(answers_ping, timeout=60, interval=0.2):
        worker.kill()
        raise AssertionError(f"the Celery worker did not answer a ping:\n{worker.communicate()[0]}")
    worker.hostname = hostname
    return worker


def stop_celery_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def password_of(username: str) -> str:
    return f"pw-{username}"


def make_user(username: str, *groups: str, **extra):
    """A user whose password is ``password_of(username)``, in ``groups`` (the operators and
    auditors groups make it staff, as the admin requires); ``extra`` sets other fields."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    if groups:
        extra.setdefault("is_staff", True)
    user = get_user_model().objects.create_user(username, f"{username}@example.com", password_of(username), **extra)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


APT_TIMEOUT = 600


def debian_package(package: str, provides: Callable[[], str | None]) -> str:
    """What ``provides()`` finds (a program's path), after ``apt-get install package`` when it finds
    nothing (as on a clean CI machine). Fails, never skips, when it cannot be had: a test that does
    not run is a gap."""
    if found := provides():
        return found
    how = f"install it with `apt-get install -y --no-install-recommends {package}` (as root)"
    if os.geteuid() != 0:
        pytest.fail(f"{package} is missing and the tests do not run as root to install it: {how}", pytrace=False)
    install = ("install", "-y", "--no-install-recommends", package)
    try:
        result = _apt_get(*install)
        if result.returncode != 0:  # stale or missing package lists: refresh them, once
            update = _apt_get("update")
            if update.returncode != 0:
                pytest.fail(f"`apt-get update` failed, so no {package}:\n{_tail(update)}", pytrace=False)
            result = _apt_get(*install)
    except FileNotFoundError:
        pytest.fail(f"{package} is missing and there is no apt-get to install it: {how}", pytrace=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"installing {package} with apt-get took more than {APT_TIMEOUT} s", pytrace=False)
    found = provides()
    if result.returncode != 0 or not found:
        pytest.fail(f"`apt-get install {package}` did not give what the tests need:\n{_tail(result)}", pytrace=False)
    return found


def _apt_get(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def _tail(result: subprocess.CompletedProcess, lines: int = 15) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])
