"""Smoke test of bench/security.py: it runs and writes its report, which bench/plots.py
draws; no timing asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bench_reports import ROOT, quick_report


def test_quick_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results" / "security.json"
    report = quick_report("security.py", out)
    assert report["errors"] == {}
    assert report["versions"]["cryptography"]
    assert [row["size"] for row in report["rows"]] == ["1KiB", "100KiB"]
    for row in report["rows"]:
        for series in ("plain_us", "sealed_us", "ratio_sealed_plain", "envelope_us", "pure_ratio"):
            assert len(row[series]["rounds"]) == report["config"]["rounds"] == 2, series
            assert row[series]["median"] > 0, series
        assert row["status"] in {"PASS", "MISS"}
    assert len(report["per_round_us"]) == 6

    plots = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "plots.py"), "--results", str(out.parent),
         "--out", str(tmp_path / "img")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert plots.returncode == 0, plots.stdout + plots.stderr
    assert (tmp_path / "img" / "security.png").read_bytes().startswith(b"\x89PNG\r\n")
    assert "crdt_ops: no " in plots.stdout  # a bench without its JSON is skipped, and said so
