"""Smoke test of bench/crdt_ops.py: it runs and writes its report; no timing asserted.

Only agentsync is measured (``--only agentsync``), so the test needs neither
pycrdt nor loro, which only the bench extra installs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "crdt_ops.py"

OUR_JOBS = {
    "map_set/agentsync/unbatched": {"us_per_op"},
    "set/agentsync/orset": {"add_us_per_op", "remove_us_per_op"},
    "counter/agentsync/pncounter": {"us_per_op"},
    "counter/agentsync/gcounter": {"us_per_op"},
    "sync/agentsync/delta": {
        "compute_encode_us_per_op",
        "apply_us_per_op",
        "bytes_per_op",
        "compute_us_per_op",
        "encode_us_per_op",
        "decode_us_per_op",
        "merge_us_per_op",
    },
}

ROWS = {
    "map_set_unbatched",
    "map_set_batched",
    "set_add",
    "set_remove",
    "pncounter_unbatched",
    "gcounter_unbatched",
    "counter_batched",
    "sync_compute_encode",
    "sync_apply",
    "sync_bytes",
}


def test_quick_run_of_agentsync_only_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results" / "crdt_ops.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--only",
            "agentsync",
            "--ops",
            "2000",
            "--sync-base",
            "300",
            "--sync-writes",
            "330",
            "--rounds",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout or "MISS" in done.stdout

    report = json.loads(out.read_text(encoding="utf-8"))
    for key in (
        "config",
        "python",
        "machine",
        "versions",
        "git",
        "jobs",
        "rows",
        "checks",
        "errors",
        "wall_seconds",
    ):
        assert key in report, key
    assert report["errors"] == {}
    assert report["config"]["rounds"] == 2
    assert report["config"]["ops"] == 2000
    assert report["config"]["libs"] == ["agentsync"]
    assert report["python"]["version"]
    assert report["versions"]["agentsync"]

    assert set(report["jobs"]) == set(OUR_JOBS)
    for name, metrics in OUR_JOBS.items():
        job = report["jobs"][name]
        assert set(job["metrics"]) == metrics, name
        for series in job["metrics"].values():
            assert len(series["rounds"]) == 2
            assert series["median"] > 0

    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == ROWS
    assert rows["set_add"]["medians"]["pycrdt"] == "n/a: no set type"
    assert rows["set_add"]["medians"]["loro"] == "n/a: no set type"
    assert rows["pncounter_unbatched"]["medians"]["pycrdt"] == "n/a: no counter type"
    assert rows["map_set_unbatched"]["medians"]["pycrdt"] is None  # not measured
    assert all(check["status"] in {"PASS", "MISS", "n/a"} for check in report["checks"])
