"""Fail points for fault tests: kill this process at a named point, once per key.

Off unless ``PLATFORM_FAILPOINTS`` names points (comma-separated) and ``PLATFORM_FAILPOINT_DIR``
names a folder, where a marker per (point, key) makes each fire once across restarts. A fault
test uses it to kill, say, the payments consumer between the gateway's answer and the commit.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


@cache
def _armed() -> tuple[frozenset[str], Path | None]:
    names = frozenset(n.strip() for n in os.environ.get("PLATFORM_FAILPOINTS", "").split(",") if n.strip())
    folder = os.environ.get("PLATFORM_FAILPOINT_DIR")
    return names, Path(folder) if folder else None


def hit(name: str, key: str) -> None:
    """Die here with exit code 137 if ``name`` is armed and has not fired for ``key`` yet."""
    names, folder = _armed()
    if name not in names or folder is None:
        return
    marker = folder / f"{name}--{key}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(137)
