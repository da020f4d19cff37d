"""Smoke test of bench/convergence.py and bench/throughput.py: they run and write reports.

Both run with ``--quick`` as real subprocesses. Only the shape of the JSON is
checked, never a timing: the figures belong to the benches, not the tests.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench_reports import quick_report


def test_convergence_quick_run_writes_its_report(tmp_path: Path) -> None:
    report = quick_report("convergence.py", tmp_path / "results" / "convergence.json", timeout=60)
    config = report["config"]
    assert config["fanout"] == 3
    assert set(report["sizes"]) == {str(n) for n in config["sizes"]}
    for n, size in report["sizes"].items():
        assert size["n"] == int(n)
        assert size["goal_p99_rounds"] >= 6
        assert size["trials"] + size["failures"] == config["trials"]
        assert size["failures"] == 0
        assert len(size["rounds"]["all"]) == size["trials"]
        assert size["rounds"]["p50"] <= size["rounds"]["p99"] <= size["rounds"]["max"]
        assert len(size["bytes"]["all"]) == size["trials"]
        assert all(b > 0 for b in size["bytes"]["all"])
        assert set(size["idle"]) == {
            "settle_rounds",
            "buffer_bytes_left",
            "bytes_per_exchange",
            "exchanges_per_node_round",
            "bytes_per_node_round",
        }
        assert size["exchange_rounds"]["p50"] > 0
        assert set(size["loop_lag_ms"]) == {"p50", "p99"}
        assert size["status"] in {"PASS", "MISS"}


def test_throughput_quick_run_writes_its_report(tmp_path: Path) -> None:
    report = quick_report("throughput.py", tmp_path / "results" / "throughput.json", timeout=60)
    config = report["config"]
    assert config["peers"] == 4
    trials = report["trials"]
    assert [t["mode"] for t in trials].count("alone") == config["trials"]
    assert [t["mode"] for t in trials].count("gossiping") == config["trials"]
    assert [t["mode"] for t in trials].count("offline") == config["trials"]
    for trial in trials:
        assert trial["writes"] > 0
        assert trial["writes_per_s"] > 0
        if trial["mode"] == "gossiping":
            assert trial["spread_s"] is not None  # the peers really got the writes
            assert trial["bytes_sent"] > 0
        elif trial["mode"] == "offline":
            assert trial["spread_s"] is None
            assert trial["exchanges"] == trial["bytes_received"] == 0  # no peer ever answers
        else:
            assert trial["spread_s"] is None
            assert trial["bytes_sent"] == 0  # no peers: nothing on the wire
    summary = report["summary"]
    assert summary["ratio"] > 0
    assert summary["bar_ratio"] == 0.5
    assert summary["status"] in {"PASS", "MISS"}
    assert set(summary["cpu_share_median"]) == {"alone", "gossiping", "offline"}
    assert summary["offline_ratio"] > 0
