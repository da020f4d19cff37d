#!/usr/bin/env python3
"""Draw the figures of docs/performance.md from the bench JSON, one PNG per bench.

Run ``python bench/plots.py [--results DIR] [--out DIR]`` (``make bench`` runs
it last). It reads ``bench/results/*.json`` as the benches write them and
writes ``docs/img/bench/<bench>.png`` for each one present; a missing file is
skipped and said so. Every figure states what was measured, its units, and
where the numbers come from: the bench, the commit it ran at (marked when the
tree had uncommitted changes), the date of the run and the load on the shared
machine. Medians are drawn with their min-max whiskers where the JSON keeps
them; nothing is smoothed or left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.axes import Axes
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
LIBS = ("agentsync", "pycrdt", "loro")
LOADS = (
    ("loadavg", ""),
    ("loadavg_at_start", " at the start"),
    ("loadavg_before", " at the start"),
    ("loadavg_at_end", " at the end"),
    ("loadavg_after", " at the end"),
)
"""Where each bench keeps the 1-minute load average it saw, and when it took it."""
COLORS = {"agentsync": "tab:blue", "pycrdt": "tab:orange", "loro": "tab:green"}


def provenance(report: dict[str, Any], bench: str) -> str:
    """One line: which bench, at which commit, when, on what machine and load."""
    git = report.get("git") or {}
    commit = (git.get("commit") or "unknown commit")[:7]
    if git.get("agentsync_dirty"):
        commit += " + uncommitted changes"
    when = report.get("created") or "date not recorded"
    machine = report.get("machine") or {}
    cpus = machine.get("cpu_count")
    where = [f"{cpus} shared cores" if cpus else "machine not recorded"]
    where += [f"load {machine[key][0]:.1f}{when}" for key, when in LOADS if machine.get(key)]
    return f"bench/{bench}.py at {commit}, run {when}; {', '.join(where)}"


def whisker(stats: dict[str, float]) -> tuple[float, list[float]]:
    """The median and its distances to min and max, as errorbar wants them."""
    median = stats["median"]
    return median, [median - stats["min"], stats["max"] - median]


def _bars(ax: Axes, labels: list[str], series: dict[str, list[Any]]) -> None:
    """Grouped bars, one group per label, one bar per series; a value that is no number
    (missing, or a reason such as "n/a: no set type") is no bar."""
    width = 0.8 / len(series)
    for n, (name, values) in enumerate(series.items()):
        shown = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float))]
        xs = [i + (n - (len(series) - 1) / 2) * width for i, _ in shown]
        ys = [v for _, v in shown]
        ax.bar(xs, ys, width, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")


def _strip(ax: Axes, groups: list[tuple[list[float], float]], each: str, mark: str) -> None:
    """For group i at x = i: every value as a gray point, and one marked value as a diamond."""
    for i, (values, marked) in enumerate(groups):
        ax.scatter(
            [i] * len(values), values, color="tab:gray", s=14, label=each if i == 0 else None
        )
        ax.scatter(i, marked, color="tab:blue", s=50, marker="D", label=mark if i == 0 else None)
    ax.set_xlim(-0.5, len(groups) - 0.5)


def _bar_line(ax: Axes, bar: float) -> None:
    """The bar an issue set, as a dashed red line."""
    ax.axhline(bar, color="tab:red", linestyle="--", label=f"bar: {bar}")


def crdt_ops(report: dict[str, Any]) -> Figure:
    rows = [row for row in report["rows"] if row["unit"] == "us/op"]
    sizes = [row for row in report["rows"] if row["unit"] == "bytes/op"]
    fig, (ax, ax_bytes) = plt.subplots(
        1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [len(rows), 1.6]}
    )
    _bars(
        ax, [r["label"] for r in rows], {lib: [r["medians"].get(lib) for r in rows] for lib in LIBS}
    )
    ax.set_ylabel("µs per operation (lower is faster)")
    ax.set_title("Local operations and sync, one process per case")
    ax.legend()
    _bars(
        ax_bytes,
        [r["label"] for r in sizes],
        {lib: [r["medians"].get(lib) for r in sizes] for lib in LIBS},
    )
    ax_bytes.set_ylabel("bytes per write in the delta")
    ax_bytes.set_title("Delta size")
    rounds = report["config"]["rounds"]
    fig.suptitle(
        f"CRDT operations against pycrdt and loro: medians of {rounds} interleaved rounds "
        "(no bar: the library has no such type or batch mode)",
        fontsize=10,
    )
    return fig


def durability(report: dict[str, Any]) -> Figure:
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, row in enumerate(rows):
        median, err = whisker(row["ratio_ours_raw"])
        ax.errorbar(i, median, yerr=[[err[0]], [err[1]]], fmt="o", capsize=4, color="tab:blue")
    _bar_line(ax, rows[0]["bar"])
    labels = [f"{r['op'].replace('_', ' ')}\n{r['mode'].upper()}\n{r['batching']}" for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("durable writes/s ÷ raw SQLite writes/s")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(
        f"Durable writes against raw sqlite3 in the same mode: median and min-max of "
        f"{report['config']['rounds']} rounds",
        fontsize=10,
    )
    return fig


def security(report: dict[str, Any]) -> Figure:
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(9, 5))
    ratios = [row["ratio_sealed_plain"] for row in rows]
    _strip(ax, [(r["rounds"], r["median"]) for r in ratios], "one round", "median")
    _bar_line(ax, rows[0]["bar"])
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set_xticks(range(len(rows)), [f"{row['size']} message" for row in rows])
    ax.set_ylabel("sealed ÷ plain time per sync exchange")
    ax.legend()
    config = report["config"]
    ax.set_title(
        f"Cost of a cluster secret per exchange on loopback: {config['rounds']} rounds, "
        f"each the median of {config['exchanges']} exchanges",
        fontsize=10,
    )
    return fig


def convergence(report: dict[str, Any]) -> Figure:
    sizes = report["sizes"]
    fig, ax = plt.subplots(figsize=(9, 5))
    _strip(
        ax,
        [(size["rounds"]["all"], size["rounds"]["p99"]) for size in sizes.values()],
        "one trial",
        "p99",
    )
    goals = [size["goal_p99_rounds"] for size in sizes.values()]
    ax.scatter(range(len(goals)), goals, color="tab:red", marker="_", s=400, label="goal (p99)")
    ax.set_xticks(range(len(sizes)), [f"{n} nodes" for n in sizes])
    ax.set_ylabel("gossip rounds from the last write until every replica is equal")
    ax.set_ylim(bottom=0)
    ax.legend()
    config = report["config"]
    ax.set_title(
        f"Convergence of real Nodes on loopback: fanout {config['fanout']}, a round "
        f"{config['interval_s']} s, {config['trials']} trials per size",
        fontsize=10,
    )
    return fig


def icde19(report: dict[str, Any]) -> Figure:
    cells = report["cells"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    labels = [f"{c['workload']}\n{c['topology'].rstrip('0123456789')}" for c in cells]
    series = {
        "ours": [c["ratio_to_bprr"]["total"]["ours"] for c in cells],
        "ours + digest": [c["ratio_to_bprr"]["total"]["ours_digest"] for c in cells],
    }
    _bars(ax, labels, series)
    ax.axhline(1.0, color="black", linewidth=0.8, label="BP+RR (push-only)")
    _bar_line(ax, report["config"]["bar"])
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("payload + metadata sent ÷ BP+RR's (lower sends less)")
    ax.legend(fontsize=8)
    config = report["config"]
    ax.set_title(
        f"The ICDE 2019 experiment, simulated: {config['nodes']} nodes, "
        f"{config['update_seconds']} s of updates, seed {config['seed']}",
        fontsize=10,
    )
    return fig


def throughput(report: dict[str, Any]) -> Figure:
    trials = report["trials"]
    modes = sorted({t["mode"] for t in trials})
    fig, ax = plt.subplots(figsize=(9, 5))
    rates = [[t["writes_per_s"] / 1000 for t in trials if t["mode"] == mode] for mode in modes]
    _strip(ax, [(r, statistics.median(r)) for r in rates], "one trial", "median")
    ax.legend()
    ax.set_xticks(range(len(modes)), modes)
    ax.set_ylabel("thousand writes/s of one writer (wall clock)")
    ax.set_ylim(bottom=0)
    config = report["config"]
    ax.set_title(
        f"One writer alone and gossiping with {config['peers']} peers: "
        f"{config['trials']} trials of {config['seconds']} s each",
        fontsize=10,
    )
    return fig


def discovery(report: dict[str, Any]) -> Figure:
    measures = report["measures"]
    sizes = report["sizes"]
    fig, ax = plt.subplots(figsize=(10, 5.2))
    width = 0.8 / len(sizes)
    for n, (hosts, size) in enumerate(sizes.items()):
        for i, key in enumerate(measures):
            median, err = whisker(size["measures"][key])
            x = i + (n - (len(sizes) - 1) / 2) * width
            ax.errorbar(
                x,
                median,
                yerr=[[err[0]], [err[1]]],
                fmt="o",
                capsize=3,
                color=f"C{n}",
                label=f"{hosts} hosts" if i == 0 else None,
            )
    ax.set_xticks(
        range(len(measures)),
        [m.strip() for m in measures.values()],
        rotation=25,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("seconds: median and min-max")
    ax.legend()
    ax.set_title(
        f"Discovery and failure detection, hosts in network namespaces: "
        f"{report['config']['runs']} runs per size",
        fontsize=10,
    )
    return fig


PLOTS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "crdt_ops": crdt_ops,
    "convergence": convergence,
    "throughput": throughput,
    "icde19": icde19,
    "durability": durability,
    "discovery": discovery,
    "security": security,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "bench")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for bench, draw in PLOTS.items():
        path = args.results / f"{bench}.json"
        if not path.is_file():
            print(f"{bench}: no {path}, skipped")
            continue
        report = json.loads(path.read_text())
        fig = draw(report)
        fig.text(0.01, 0.005, provenance(report, bench), fontsize=7, color="dimgray")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        target = args.out / f"{bench}.png"
        fig.savefig(target, dpi=100, metadata={"Software": None})
        plt.close(fig)
        print(f"{bench}: {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
