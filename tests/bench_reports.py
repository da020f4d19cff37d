"""What the bench smoke tests share: a ``--quick`` run of a bench script and its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HEADER = ("schema", "created", "config", "python", "machine", "versions", "git")
"""The fields every bench report starts with (``benchlib.report_header`` and ``environment``)."""


def quick_report(script: str, out: Path, timeout: float = 120) -> dict[str, Any]:
    """Run ``bench/<script> --quick --json out`` as a real subprocess; its checked report.

    It must exit 0 with no traceback and write a report with the common header,
    marked quick, that took some time. Only the shape is checked, never a timing.
    """
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    for key in HEADER:
        assert key in report, key
    assert report["config"]["quick"] is True
    assert report["wall_seconds"] > 0
    return report
