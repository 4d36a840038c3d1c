"""A small foreground process supervisor for ``make run``.

One log stream with a per-process prefix; a child that exits is restarted with
exponential back-off (reset once it has stayed up a while); SIGINT/SIGTERM stops every
child (SIGTERM to the child, then SIGKILL to its whole process group after a grace period), so nothing is
left behind. Each child also gets SIGTERM from the kernel if the supervisor itself is
killed (Linux ``PR_SET_PDEATHSIG``).

Run standalone: ``python -m orders_platform.supervisor -p 'web=cmd args' -p 'worker=...'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

COLOURS = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96]


@dataclass(frozen=True)
class Program:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


class Supervisor:
    def __init__(
        self,
        programs: Sequence[Program],
        *,
        env: Mapping[str, str] | None = None,
        grace: float = 10.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        out=None,
    ) -> None:
        names = [program.name for program in programs]
        if len(set(names)) != len(names):
            raise ValueError(f"program names must be unique: {names}")
        self.programs = list(programs)
        self.env = dict(os.environ if env is None else env)
        self.grace = grace
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.out = out or sys.stdout
        self._width = max([len(name) for name in names] + [len("supervisor")])
        self._colour = self.out.isatty()
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._stopping: asyncio.Event | None = None

    # -- output --------------------------------------------------------------------

    def log(self, name: str, line: str) -> None:
        prefix = f"{name:<{self._width}} | "
        if self._colour:
            index = ([p.name for p in self.programs].index(name) if name != "supervisor" else -1) % len(COLOURS)
            prefix = f"\x1b[{COLOURS[index] if name != 'supervisor' else 1}m{prefix}\x1b[0m"
        self.out.write(prefix + line + "\n")
        self.out.flush()

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGINT/SIGTERM; return the exit code (0 after a clean stop)."""
        return asyncio.run(self._main())

    async def _main(self) -> int:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_stop, sig)
        tasks = [asyncio.create_task(self._keep_running(program)) for program in self.programs]
        await self._stopping.wait()
        await asyncio.gather(*(self._stop_child(name) for name in list(self._children)))
        await asyncio.gather(*tasks, return_exceptions=True)
        self.log("supervisor", "all processes stopped")
        return 0

    def _request_stop(self, sig: int) -> None:
        if self._stopping.is_set():
            return
        self.log("supervisor", f"received {signal.Signals(sig).name}, stopping {len(self._children)} process(es)")
        self._stopping.set()

    async def _keep_running(self, program: Program) -> None:
        delay = self.backoff_initial
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process = await asyncio.create_subprocess_exec(
                    *program.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**self.env, **program.env, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,  # its own process group: stopped as a whole
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                self.log("supervisor", f"{program.name}: cannot start {program.argv[0]!r}: {exc}")
                code = None
            else:
                self._children[program.name] = process
                self.log("supervisor", f"{program.name} started (pid {process.pid})")
                if self._stopping.is_set():  # the stop began while this child was being spawned
                    await self._stop_child(program.name)
                pump = asyncio.create_task(self._pump(program.name, process.stdout))
                code = await process.wait()
                _signal_group(process.pid, signal.SIGKILL)  # leftovers would hold the pipe open
                await pump
                self._children.pop(program.name, None)
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= self.stable_after:
                delay = self.backoff_initial
            self.log("supervisor", f"{program.name} exited with code {code}; restarting in {delay:.1f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, self.backoff_max)

    async def _pump(self, name: str, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.log(name, line.decode(errors="replace").rstrip("\r"))
        if pending:
            self.log(name, pending.decode(errors="replace"))

    async def _stop_child(self, name: str) -> None:
        process = self._children.get(name)
        if process is None or process.returncode is not None:
            return
        # The leader alone gets SIGTERM, so it can shut its own children down in order
        # (a Celery worker and its pool); whatever it leaves is killed with the group.
        _signal_group(process.pid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=self.grace)
        except TimeoutError:
            self.log("supervisor", f"{name} did not stop within {self.grace:.0f}s; killing it")
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # whatever the leader left in its group


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when this process's parent dies, however it dies.

    Called in each child before exec (so children follow the supervisor) and by
    ``runplatform`` itself (so it follows ``make``)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--program", action="append", required=True, metavar="NAME=COMMAND")
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--backoff", type=float, default=1.0, help="first restart delay, doubled each time")
    args = parser.parse_args(argv)
    programs = []
    for spec in args.program:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command.strip():
            parser.error(f"--program expects NAME=COMMAND, got {spec!r}")
        programs.append(Program(name, shlex.split(command)))
    return Supervisor(programs, grace=args.grace, backoff_initial=args.backoff).run()


if __name__ == "__main__":
    sys.exit(main())
