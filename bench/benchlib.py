"""What the bench scripts share: report headers and environment, the commit, argument types."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_info() -> dict[str, Any]:
    """The commit measured, and whether agentsync/ had uncommitted changes."""
    status = _git("status", "--porcelain", "--", "agentsync")
    return {"commit": _git("rev-parse", "HEAD"), "agentsync_dirty": bool(status)}


def positive(text: str) -> int:
    """An argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def report_header(argv: list[str] | None) -> dict[str, Any]:
    """The fields every JSON report starts with: schema, when, and the arguments."""
    return {
        "schema": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
    }


def version(dist: str) -> str | None:
    """The installed version of ``dist``, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def read_first(path: str, prefix: str) -> str | None:
    """The value of the first ``prefix: value`` line of ``path`` (as in /proc/cpuinfo)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def cpus_usable() -> int | None:
    """How many CPUs this process may run on, where the system says."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return None


def environment(
    python: dict[str, Any] | None = None, versions: tuple[str, ...] = (), **machine: Any
) -> dict[str, Any]:
    """A report's "python", "machine" and "versions" blocks, plus the fields given for each.

    ``versions`` names the distributions measured beside agentsync.
    """
    return {
        "python": {
            "version": platform.python_version(),
            "executable": sys.executable,
            **(python or {}),
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_model": read_first("/proc/cpuinfo", "model name"),
            "cpu_count": os.cpu_count(),
            "cpus_usable": cpus_usable(),
            **machine,
        },
        "versions": {name: version(name) for name in ("agentsync", *versions)},
    }


def write_json(path: str, report: dict[str, Any]) -> Path:
    """Write ``report`` to ``path`` as strict JSON (NaN and infinities as null)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    return out


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as None, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
