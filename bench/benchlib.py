"""What the bench scripts share: report headers, the commit measured, argument types."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from datetime import datetime, timezone
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
