"""The benchmark suite behind ``make bench``: each benchmark's own report, then one table.

    .venv/bin/python bench/run_all.py [--saga "--runs 1 --orders 500"] [--audit "--events 5000"] [--only saga]

Runs ``bench/saga_throughput.py`` (the whole saga through ``POST /api/orders/``) and, when it
exists, ``bench/audit_throughput.py`` (the audit consumer against its fetch+ack ceiling), one
after the other (never at once: they would share the 2 cores), with their default options
unless told otherwise, prints each report as it comes and ends with one table of every
target. A report, not a test: the exit code is 0 unless a benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

HERE = Path(__file__).resolve().parent
HEADERS = ("scenario", "figure (median, min-max)", "target", "ratio", "verdict")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--saga", default="", help="extra options for saga_throughput.py (one quoted string)")
    parser.add_argument("--audit", default="", help="extra options for audit_throughput.py (one quoted string)")
    parser.add_argument("--only", choices=("saga", "audit"), default=None, help="run one benchmark only")
    return parser.parse_args()


def stream(command: list[str]) -> tuple[int, str]:
    """Run ``command``, echoing its output as it comes; return its exit code and its stdout."""
    process = subprocess.Popen(command, cwd=benchlib.ROOT, stdout=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    return process.wait(), "".join(lines)


def saga(extra: str) -> tuple[list[list[str]], str | None]:
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as folder:
        summary = Path(folder) / "saga.json"
        script = str(HERE / "saga_throughput.py")
        command = [sys.executable, script, *shlex.split(extra), "--summary-json", str(summary)]
        code, _ = stream(command)
        if code != 0 or not summary.exists():
            return [], f"saga_throughput.py could not run (exit {code})"
        return json.loads(summary.read_text())["rows"], None


def audit(extra: str) -> tuple[list[list[str]], str | None]:
    script = HERE / "audit_throughput.py"
    if not script.exists():
        return [], None
    code, output = stream([sys.executable, str(script), *shlex.split(extra)])
    if code != 0:
        return [], f"audit_throughput.py could not run (exit {code})"
    medians = dict(re.findall(r"^(ceiling|audit)\s+[\d,]+\s+([\d,]+)\s", output, flags=re.MULTILINE))
    figure = " vs ".join(f"{name} {medians[name]}/s" for name in ("audit", "ceiling") if name in medians) or "-"
    rows = []
    for label, value, target, verdict in re.findall(
        r"^(\S.*?)\s{2,}([\d.]+|nan)\s{2,}(>= [\d.]+)\s{2,}(PASS|FAIL)\s*$", output, flags=re.MULTILINE
    ):
        rows.append([f"audit consumer: {label}", figure, target, value, verdict])
    if not rows:
        rows.append(["audit consumer (see its report above)", figure, "-", "-", "-"])
    return rows, None


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    rows: list[list[str]] = []
    problems: list[str] = []
    for name, run in (("saga", saga), ("audit", audit)):
        if args.only not in (None, name):
            continue
        print(f"\n######## {name} ########\n", flush=True)
        found, problem = run(getattr(args, name))
        rows += found
        if problem:
            problems.append(problem)
    minutes = (time.monotonic() - started) / 60
    print(f"\n######## summary ({minutes:.1f} min) ########\n")
    if rows:
        benchlib.print_table(HEADERS, rows)
    for problem in problems:
        print(f"  {problem}")
    failed = [row[0] for row in rows if row[-1] == "FAIL"]
    print(f"\nOVERALL: {'FAIL' if failed or problems else 'PASS'} (a report, not a test)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
