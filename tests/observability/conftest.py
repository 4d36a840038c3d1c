"""promtool for the checks of docker/observability: Debian's ``prometheus`` package, installed
with apt when missing (as ``tests/browser`` does for Chromium).

When it cannot be had, the tests that need it **fail**, never skip: unchecked alert rules and
an unchecked Prometheus configuration are exactly what this folder exists to prevent, and a
skip reads as a pass in a summary nobody scrolls.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, debian_package

OBSERVABILITY = ROOT / "docker" / "observability"


@pytest.fixture(scope="session")
def promtool() -> Path:
    """The path of promtool, installed with ``apt-get install prometheus`` when missing."""
    return Path(debian_package("prometheus", lambda: shutil.which("promtool")))


def run_promtool(promtool: Path, *args: str, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
