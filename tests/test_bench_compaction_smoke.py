"""Smoke test of bench/compaction.py: it runs and writes its report; no timing asserted."""

from __future__ import annotations

from pathlib import Path

from tests.bench_reports import quick_report


def test_quick_run_writes_the_report(tmp_path: Path) -> None:
    report = quick_report("compaction.py", tmp_path / "compaction.json")
    assert report["errors"] == {}
    [row] = report["rows"]
    assert row["elements"] == 2_000 and row["snapshot_bytes"] > 0
    assert row["rounds_kept"] + row["rounds_skipped"] == report["config"]["rounds"] == 2
    if row["rounds_kept"]:  # a watch tick may start a compaction in every idle phase
        assert row["compaction_ms"] > 0 and row["idle_writes"] == 500
        assert row["compacting_writes"] >= 1  # the loop writes before it looks
