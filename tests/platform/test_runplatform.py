"""``make run``'s command end to end: embedded PostgreSQL and NATS in a fresh data folder,
migrations, the admin and its static files served by gunicorn with several workers, a crashed
web process restarted, a clean stop with nothing left running (gunicorn's workers included),
a fast second start with code reloading."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import psutil
import pytest

from orders_platform import webserver
from orders_platform.embedded import dev
from orders_platform.embedded.procs import LOOPBACK, free_port, pid_alive, wait_until
from tests.platform.test_supervisor import Output
from tests.support import PYTHON, ROOT, clean_env, http_status, manage, wait_for_status

pytestmark = pytest.mark.slow

WORKERS = 3
STATIC_FILES = (
    "/static/admin/css/base.css",
    "/static/admin/js/core.js",
    "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css",
    "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
)


def platform_env(data_dir, **web):
    web = {"WEB_CONCURRENCY": str(WORKERS), "WEB_THREADS": "1", "WEB_RELOAD": "0", "WEB_ACCESS_LOG": "0", **web}
    return clean_env(
        DJANGO_SETTINGS_MODULE="orders_platform.settings.development",
        PLATFORM_DATA_DIR=str(data_dir),
        PAYMENT_GATEWAY_URL=f"http://127.0.0.1:{free_port()}",
        **web,
    )


def start_platform(data_dir, port, **web) -> tuple[subprocess.Popen, Output]:
    process = subprocess.Popen(
        [PYTHON, "manage.py", "runplatform", "--port", str(port)],
        cwd=ROOT,
        env=platform_env(data_dir, **web),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return process, Output(process)


def every_pid(process: subprocess.Popen | psutil.Process, data_dir) -> set[int]:
    """The platform's process tree plus the embedded servers (which run in their own sessions)."""
    pids = {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
    for server in (dev.postgres_server(data_dir), dev.nats_server(data_dir)):
        pids.add(server.pid())
    return pids


def gunicorn(process: subprocess.Popen) -> tuple[psutil.Process, list[psutil.Process]]:
    """The web child (gunicorn's master) of the platform and its workers."""
    (master,) = [child for child in psutil.Process(process.pid).children() if "gunicorn" in child.cmdline()]
    return master, master.children()


def wait_for_workers(process: subprocess.Popen, count: int = WORKERS, *, not_in=(), poke=None) -> psutil.Process:
    """Wait until the web child has ``count`` booted workers (none of them in ``not_in``); its master.
    ``poke`` is called at every look (e.g. to touch a module until the reloader notices)."""

    def ready():
        if poke is not None:
            poke()
        try:
            master, workers = gunicorn(process)
        except (ValueError, psutil.Error):
            return None
        pids = {worker.pid for worker in workers}
        return master if len(pids) == count and not pids & set(not_in) else None

    assert wait_until(ready, timeout=60), [child.cmdline() for child in psutil.Process(process.pid).children()]
    return ready()


def gunicorn_pids(port: int) -> set[int]:
    """Every gunicorn process on the machine serving ``port``."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[1:3] == ["-m", "gunicorn"] and f"{LOOPBACK}:{port}" in cmdline:
            found.add(proc.info["pid"])
    return found


def stop(process: subprocess.Popen, sig: int) -> int:
    process.send_signal(sig)
    return process.wait(timeout=60)


def test_the_platform_starts_serves_the_admin_and_stops_with_no_orphans(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://{LOOPBACK}:{port}"

    started = time.monotonic()
    process, output = start_platform(data_dir, port)
    try:
        assert wait_for_status(f"{base}/admin/login/", 200, timeout=180), "\n".join(output.lines)
        first_start = time.monotonic() - started
        assert http_status(f"{base}/readyz") == 200
        output.wait_for("created development superuser 'admin' with password 'admin'")
        output.wait_for(r"catalogue: 10 product\(s\) added")
        output.wait_for(rf"^Web: gunicorn, {WORKERS} worker\(s\) \(WEB_RELOAD=1 reloads on code changes\)$")
        output.wait_for(rf"^web +\| .*\[INFO\] Listening at: http://{LOOPBACK}:{port} ")
        output.wait_for(r"^web +\| .*\[INFO\] Booting worker with pid", count=WORKERS)
        output.wait_for(r"^worker +\| .*ready")
        output.wait_for(r"^relay +\| .*outbox relay running")
        output.wait_for(r"^dead-letters +\| .*consumer dead-letters running on DLQ")
        output.wait_for(r"^gateway +\| payment gateway simulator on http://127.0.0.1:")
        output.wait_for(r"^inventory +\| .*consumer inventory running on ORDERS")
        output.wait_for(r"^orders +\| .*consumer orders running on INVENTORY, PAYMENTS")
        output.wait_for(r"^saga-failures +\| .*consumer saga-failures running on DLQ")
        output.wait_for(r"^payments +\| .*consumer payments running on ORDERS")
        output.wait_for(r"^audit +\| .*consumer audit running on INVENTORY, OPERATOR, ORDERS, PAYMENTS")
        assert not any("runserver" in line for line in output.lines)

        # The web process is gunicorn's master with WORKERS workers, each a gunicorn process.
        master = wait_for_workers(process)
        assert master.cmdline()[:4] == [PYTHON, "-m", "gunicorn", "orders_platform.wsgi:application"]
        assert all(worker.cmdline() == master.cmdline() for worker in master.children())

        # Static files (admin, Swagger UI) are served by the app itself (WhiteNoise), as are the docs.
        for path in (*STATIC_FILES, "/api/docs/"):
            assert http_status(f"{base}{path}") == 200, path
        assert http_status(f"{base}/static/admin/css/no-such-file.css") == 404
        # No access log by default (errors and Django's warnings still show).
        assert not any("/static/admin/css/base.css" in line for line in output.lines)
        output.wait_for(r"^web +\| .*Not Found: /static/admin/css/no-such-file.css")

        # A dead worker is replaced by gunicorn; a dead master is restarted by the supervisor,
        # its orphaned workers killed with its process group.
        victim = master.children()[0].pid
        os.kill(victim, signal.SIGKILL)
        master = wait_for_workers(process, not_in={victim})
        old_master, old_workers = master.pid, [worker.pid for worker in master.children()]
        os.kill(old_master, signal.SIGKILL)
        output.wait_for(r"^supervisor +\| web exited with code -9; restarting")
        master = wait_for_workers(process, not_in=old_workers)
        assert master.pid != old_master
        assert wait_until(lambda: not any(pid_alive(pid) for pid in old_workers), timeout=10)
        assert wait_for_status(f"{base}/healthz", 200, timeout=60)

        pids = every_pid(process, data_dir)
        assert None not in pids and len(pids) >= 12 + WORKERS

        second = manage("runplatform", "--port", str(free_port()), env=platform_env(data_dir))
        assert second.returncode != 0 and "already running" in second.stderr
        assert "Traceback" not in second.stderr
        assert http_status(f"{base}/readyz") == 200, "the refused second start left the first one intact"
    finally:
        code = stop(process, signal.SIGTERM)
    assert code == 0, "\n".join(output.lines)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10), [
        pid for pid in pids if pid_alive(pid)
    ]
    assert not gunicorn_pids(port), "no gunicorn process survives the platform"
    assert (data_dir / "postgres" / "PG_VERSION").exists(), "the data folder is kept"

    # Second start, with code reloading: a changed module restarts every worker.
    started = time.monotonic()
    process, output = start_platform(data_dir, port, WEB_RELOAD="1")
    try:
        assert wait_for_status(f"{base}/admin/login/", 200, timeout=120), "\n".join(output.lines)
        second_start = time.monotonic() - started
        output.wait_for("catalogue: 0 product\\(s\\) added, 10 already present")
        output.wait_for(rf"^Web: gunicorn, {WORKERS} worker\(s\), reloading on code changes$")
        master = wait_for_workers(process)
        assert "--reload" in master.cmdline()
        workers = [worker.pid for worker in master.children()]
        module = webserver.__file__  # imported by every worker (through the development settings)
        # Touched until noticed: a worker's reloader takes its first look at the files some time
        # after boot, and a change made before that look is its baseline, not a change.
        assert wait_for_workers(process, not_in=workers, poke=lambda: os.utime(module)).pid == master.pid
        assert wait_for_status(f"{base}/healthz", 200, timeout=60)
        pids = every_pid(process, data_dir)
    finally:
        code = stop(process, signal.SIGINT)
    assert code == 0
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)
    assert not gunicorn_pids(port)
    print(f"first start {first_start:.1f}s, second start {second_start:.1f}s")


def test_a_busy_web_port_is_a_clear_error_and_leaves_nothing_running(tmp_path):
    data_dir = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = manage("runplatform", "--port", str(port), env=platform_env(data_dir), timeout=120)
    assert result.returncode != 0
    assert f"port {LOOPBACK}:{port} is already in use" in result.stderr
    assert f"make run WEB_PORT={port + 1}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not dev.postgres_server(data_dir).is_running()
    assert not dev.nats_server(data_dir).is_running()


def test_killing_the_parent_of_the_platform_stops_everything(tmp_path):
    """``make`` killed with -9 (no chance to forward anything): the platform still stops cleanly."""
    data_dir, port = tmp_path / "data", free_port()
    wrapper = subprocess.Popen(
        [PYTHON, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         PYTHON, "manage.py", "runplatform", "--port", str(port)],
        cwd=ROOT, env=platform_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for_status(f"http://{LOOPBACK}:{port}/healthz", 200, timeout=180)
        (platform,) = psutil.Process(wrapper.pid).children()
        pids = every_pid(platform, data_dir) | {platform.pid}
    finally:
        wrapper.kill()
        wrapper.wait()
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=60), [
        psutil.Process(pid).cmdline() for pid in pids if pid_alive(pid)
    ]


def test_a_malformed_web_port_is_a_usage_error(tmp_path):
    env = platform_env(tmp_path / "data")
    result = manage("runplatform", env={**env, "WEB_PORT": "eighty"}, timeout=120)
    assert result.returncode != 0
    assert "WEB_PORT/--port must be a TCP port number (1-65535); got 'eighty'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not dev.postgres_server(tmp_path / "data").is_running()
    assert not dev.nats_server(tmp_path / "data").is_running()
