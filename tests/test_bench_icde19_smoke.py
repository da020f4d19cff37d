"""Smoke test of bench/icde19.py: ``--quick`` runs and writes its report; no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "icde19.py"

ALGORITHMS = {"state", "classic", "bprr", "ours", "ours_digest"}
MEASURES = {"messages", "payload", "metadata", "bytes", "total"}
QUICK_CELLS = {
    (workload, topology)
    for workload in ("gset", "gcounter", "gmap10")
    for topology in ("tree15", "mesh15")
}


def test_quick_run_writes_every_cell_with_every_algorithm(tmp_path: Path) -> None:
    out = tmp_path / "results" / "icde19.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--seed", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bp+rr" in done.stdout and "gmap10 mesh15" in done.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["experiment"] == "icde19"
    assert report["config"]["seed"] == 3 and report["config"]["quick"] is True
    assert report["config"]["nodes"] == 15 and report["config"]["baseline"] == "bprr"
    cells = report["cells"]
    assert {(c["workload"], c["topology"]) for c in cells} == QUICK_CELLS
    for cell in cells:
        assert set(cell["tallies"]) == ALGORITHMS
        for tally in cell["tallies"].values():
            assert set(tally) == MEASURES
            assert tally["total"] == tally["payload"] + tally["metadata"]
            assert tally["messages"] > 0 and tally["bytes"] > 0
        for measure in ("total", "bytes", "payload", "metadata"):
            ratios = cell["ratio_to_bprr"][measure]
            assert set(ratios) == ALGORITHMS and ratios["bprr"] == 1.0
        assert set(cell["converged_at_s"]) == ALGORITHMS
        assert isinstance(cell["ours_within_bar"], bool)
        assert set(cell["published_ratio_to_bprr"]) == {"state", "classic"}
