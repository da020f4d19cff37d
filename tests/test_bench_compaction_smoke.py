"""Smoke test of bench/compaction.py: it runs and writes its report; no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "compaction.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compaction.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    for key in ("schema", "created", "config", "python", "machine", "versions", "git", "rows"):
        assert key in report, key
    assert report["config"]["quick"] is True
    assert report["errors"] == {}
    [row] = report["rows"]
    assert row["elements"] == 2_000 and row["snapshot_bytes"] > 0
    assert row["rounds_kept"] + row["rounds_skipped"] == report["config"]["rounds"] == 2
    if row["rounds_kept"]:  # a watch tick may start a compaction in every idle phase
        assert row["compaction_ms"] > 0 and row["idle_writes"] == 500
        assert row["compacting_writes"] >= 1  # the loop writes before it looks
