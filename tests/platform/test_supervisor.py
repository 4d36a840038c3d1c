"""The supervisor behind ``make run``, with real child processes."""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil

from orders_platform.embedded.procs import pid_alive, wait_until
from tests.support import PYTHON, ROOT

# A program that starts a grandchild (which ignores nothing and just sleeps) and reports both pids.
PARENT_WITH_GRANDCHILD = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"pids {os.getpid()} {child.pid}", flush=True)
    time.sleep(600)
    """
)
CRASHER = "import sys; print('crashing now', flush=True); sys.exit(3)"
STUBBORN = textwrap.dedent(
    """
    import os, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"stubborn {os.getpid()}", flush=True)
    time.sleep(600)
    """
)


class Output:
    """Collects a child's stdout lines in a thread so the test can wait for patterns."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process):
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20) -> list[re.Match]:
        def matches():
            return [m for line in list(self.lines) if (m := re.search(pattern, line))]

        assert wait_until(lambda: len(matches()) >= count, timeout=timeout), "\n".join(self.lines)
        return matches()


def start_supervisor(*programs: tuple[str, str], grace: float = 2.0) -> tuple[subprocess.Popen, Output]:
    args = [PYTHON, "-m", "orders_platform.supervisor", "--grace", str(grace), "--backoff", "0.2"]
    for name, code in programs:
        args += ["--program", f"{name}={sys.executable} -c {shlex.quote(code)}"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, Output(process)


def test_logs_are_prefixed_and_a_crashed_child_is_restarted_with_growing_backoff():
    process, output = start_supervisor(("steady", PARENT_WITH_GRANDCHILD), ("crasher", CRASHER))
    try:
        output.wait_for(r"^steady +\| pids \d+ \d+$")
        output.wait_for(r"^crasher +\| crashing now$", count=3)
        delays = [float(m.group(1)) for m in output.wait_for(r"crasher exited with code 3; restarting in ([\d.]+)s", 2)]
        assert delays[:3] == sorted(delays[:3]) and delays[1] > delays[0], "back-off grows"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_sigterm_stops_every_child_and_grandchild_and_exits_zero():
    process, output = start_supervisor(("one", PARENT_WITH_GRANDCHILD), ("two", PARENT_WITH_GRANDCHILD))
    pids = [int(pid) for m in output.wait_for(r"\| pids (\d+) (\d+)$", count=2) for pid in m.groups()]
    assert all(pid_alive(pid) for pid in pids)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    output.wait_for("all processes stopped")
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=5), "no orphans are left"


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    process, output = start_supervisor(("stubborn", STUBBORN), grace=1.0)
    pid = int(output.wait_for(r"stubborn (\d+)$")[0].group(1))
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0
    assert not pid_alive(pid)
    output.wait_for("did not stop within 1s; killing it")
    assert time.monotonic() - started < 15


def test_children_die_with_a_killed_supervisor():
    """kill -9 of the supervisor: its direct children still get SIGTERM from the kernel.
    (Their own children are the children's business; SIGTERM/SIGINT is the clean path.)"""
    process, output = start_supervisor(("steady", PARENT_WITH_GRANDCHILD))
    child_pid, grandchild_pid = (int(pid) for pid in output.wait_for(r"\| pids (\d+) (\d+)$")[0].groups())
    try:
        process.kill()
        process.wait(timeout=10)
        assert wait_until(lambda: not pid_alive(child_pid), timeout=10), "PR_SET_PDEATHSIG ends the child"
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(grandchild_pid).kill()


def test_a_bad_program_spec_is_rejected_with_a_usage_message():
    result = subprocess.run(
        [PYTHON, "-m", "orders_platform.supervisor", "--program", "no-equals-sign"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--program expects NAME=COMMAND" in result.stderr


def test_the_web_program_is_gunicorn_with_its_workers_and_options():
    from orders_platform.webserver import default_workers, web_program

    web = web_program(host="127.0.0.1", port=8001, workers=3)
    assert web.name == "web"
    assert list(web.argv[:4]) == [sys.executable, "-m", "gunicorn", "orders_platform.wsgi:application"]
    options = " ".join(web.argv[4:])
    assert "--bind 127.0.0.1:8001 --workers 3 --threads 1" in options
    assert "--reload" not in options and "--access-logfile" not in options
    reloading = web_program(host="::1", port=8000, workers=1, threads=4, reload=True, access_log=True)
    assert "--bind [::1]:8000" in " ".join(reloading.argv)
    assert {"--reload", "--access-logfile"} <= set(reloading.argv)
    assert 1 <= default_workers() <= 8
