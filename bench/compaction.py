#!/usr/bin/env python3
"""Write latency while the store compacts its log into a snapshot.

Run ``python bench/compaction.py [--json PATH] [--quick] [--rounds N] [--elements N ...]``.

Issue 5 asks for a log "compacted in the background without blocking
writes". This measures what a writer sees while it happens:

* A ``Node.start_background("bench", data_dir=..., durability="normal")``
  (its loop on a thread, as agent code that is not async holds it), no
  peers, holds a set of ``--elements`` elements, written with ``update`` in
  chunks of 1,000 and then compacted once, so every round starts from a
  snapshot and a short log.
* Each round, the main thread makes ``node.counter("c").increment()``
  calls one at a time, timing each with ``time.perf_counter``:
  *idle*, ``--writes`` of them with no compaction running; then a
  compaction is started on the node's loop, under the node's lock, exactly
  as its watch tick starts one when the log has outgrown the snapshot
  (``Node._compact``), and the writes go on, timed as *compacting*, until
  it has ended.
* The store's ``begin_compaction`` (the state copied under the lock: what
  a write can wait for) and ``finish_compaction`` (encoded and written on a
  worker thread, the transaction under the store's lock) are wrapped to
  time them. A compaction the watch started on its own during the idle
  writes would make them not idle: such a round is reported and left out.

Reported per size: the median over rounds of the compaction's length, the
copy's, and the writes' latency (median, 99th percentile, max) and rate,
idle and compacting. The garbage collector stays on. Latency under
compaction is mostly the GIL: the encode holds it on the worker thread and
hands it over every ``sys.getswitchinterval()`` (5 ms). The script exits 0
unless a measurement failed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchlib import environment, git_info, positive, report_header, version, write_json

DEFAULT_ELEMENTS = (10_000, 100_000, 300_000)
QUICK_ELEMENTS = (2_000,)
DEFAULT_ROUNDS = 5
DEFAULT_WRITES = 5_000
CHUNK = 1_000
DEADLINE_S = 120.0
"""The longest wait for a compaction to end."""


class Timed:
    """Wraps a store method and keeps (start, end) of each call, in perf_counter seconds."""

    def __init__(self, owner: Any, name: str) -> None:
        self.calls: list[tuple[float, float]] = []
        self._owner, self._name = owner, name
        self._inner: Callable[..., Any] = getattr(owner, name)
        setattr(owner, name, self)

    def __call__(self, *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return self._inner(*args)
        finally:
            self.calls.append((began, time.perf_counter()))

    def undo(self) -> None:
        setattr(self._owner, self._name, self._inner)


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency(samples: list[float], seconds: float) -> dict[str, float]:
    """Median, 99th percentile and max in ms, and the rate in writes/s."""
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p99_ms": _percentile(ordered, 0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "per_s": len(samples) / seconds if seconds > 0 else 0.0,
        "writes": float(len(samples)),
    }


def _wait(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {DEADLINE_S:.0f} s")
        time.sleep(0.01)


def measure(elements: int, rounds: int, writes: int, workdir: str) -> dict[str, Any]:
    from agentsync import Node

    node = Node.start_background(
        "bench", data_dir=os.path.join(workdir, f"n{elements}"), durability="normal",
        discovery=False,
    )  # fmt: skip
    store = node._store
    loop = node._loop
    assert store is not None and loop is not None
    begin, finish = Timed(store, "begin_compaction"), Timed(store, "finish_compaction")
    try:
        big = node.set("big")
        for start in range(0, elements, CHUNK):
            big.update(f"e{i}" for i in range(start, min(elements, start + CHUNK)))

        def compact() -> None:
            with node._lock:
                node._compact(store)

        def compact_and_wait() -> None:
            ended = len(finish.calls)
            loop.call_soon_threadsafe(compact)
            _wait(lambda: len(finish.calls) > ended, "the first compaction")

        _wait(lambda: not store._compacting, "a compaction the fill started")
        compact_and_wait()
        snapshot_bytes = store._snapshot_bytes
        increment = node.counter("c").increment
        clock = time.perf_counter
        results: list[dict[str, Any]] = []
        for _ in range(rounds):
            _wait(lambda: not store._compacting, "a compaction the watch started")
            begun_before = len(begin.calls)
            idle: list[float] = []
            idle_began = clock()
            for _ in range(writes):
                t0 = clock()
                increment()
                idle.append(clock() - t0)
            idle_s = clock() - idle_began
            if len(begin.calls) != begun_before:
                results.append({"skipped": "the watch started a compaction during the idle writes"})
                continue
            ended = len(finish.calls)
            busy: list[float] = []
            busy_began = clock()
            loop.call_soon_threadsafe(compact)
            deadline = busy_began + DEADLINE_S
            while True:  # a write first: a small compaction may end before the loop looks
                t0 = clock()
                increment()
                busy.append(clock() - t0)
                if len(finish.calls) != ended:
                    break
                if t0 > deadline:
                    raise TimeoutError("the compaction did not end")
            busy_s = clock() - busy_began
            copy = begin.calls[-1]
            done = finish.calls[-1]
            results.append(
                {
                    "compaction_ms": (done[1] - copy[0]) * 1e3,
                    "copy_under_lock_ms": (copy[1] - copy[0]) * 1e3,
                    "encode_and_write_ms": (done[1] - done[0]) * 1e3,
                    "idle": latency(idle, idle_s),
                    "compacting": latency(busy, busy_s),
                }
            )
    finally:
        begin.undo()
        finish.undo()
        node.stop()
    return {"elements": elements, "snapshot_bytes": snapshot_bytes, "rounds": results}


def _measured(elements: int, rounds: int, writes: int, workdir: str) -> dict[str, Any] | str:
    """``measure``'s result, or the traceback of its failure."""
    try:
        return measure(elements, rounds, writes, workdir)
    except Exception:
        return traceback.format_exc()


def _median(rounds: list[dict[str, Any]], *keys: str) -> float | None:
    values = []
    for r in rounds:
        value: Any = r
        for key in keys:
            value = value[key]
        values.append(value)
    return statistics.median(values) if values else None


def summarize(measured: dict[str, Any]) -> dict[str, Any]:
    kept = [r for r in measured["rounds"] if "skipped" not in r]
    row: dict[str, Any] = {
        "elements": measured["elements"],
        "snapshot_bytes": measured["snapshot_bytes"],
        "rounds_kept": len(kept),
        "rounds_skipped": len(measured["rounds"]) - len(kept),
    }
    for key in ("compaction_ms", "copy_under_lock_ms", "encode_and_write_ms"):
        row[key] = _median(kept, key)
    for phase in ("idle", "compacting"):
        for key in ("median_ms", "p99_ms", "max_ms", "per_s", "writes"):
            row[f"{phase}_{key}"] = _median(kept, phase, key)
    return row


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _latencies(row: dict[str, Any], phase: str) -> str:
    return "/".join(_f(row[f"{phase}_{k}"], 3) for k in ("median_ms", "p99_ms", "max_ms"))


def render(rows: list[dict[str, Any]]) -> str:
    header = ["elements", "snapshot", "compaction ms", "copy ms", "writes idle: med/p99/max ms",
              "/s", "compacting: med/p99/max ms", "/s", "writes in it"]  # fmt: skip
    lines = [header]
    lines.extend(
        [
            f"{row['elements']:,}",
            f"{row['snapshot_bytes'] / 1024:.0f} KiB",
            _f(row["compaction_ms"], 1),
            _f(row["copy_under_lock_ms"], 1),
            _latencies(row, "idle"),
            _f(row["idle_per_s"], 0),
            _latencies(row, "compacting"),
            _f(row["compacting_per_s"], 0),
            _f(row["compacting_writes"], 0),
        ]
        for row in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write latency while the log compacts.")
    parser.add_argument("--json", metavar="PATH", help="write every round and the medians here")
    parser.add_argument("--quick", action="store_true", help="smoke run: one small state")
    parser.add_argument("--rounds", type=positive, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--writes", type=positive, help=f"idle writes a round ({DEFAULT_WRITES})")
    parser.add_argument("--elements", type=positive, nargs="+", help="set sizes to measure")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else DEFAULT_ROUNDS)
    writes = args.writes or (500 if args.quick else DEFAULT_WRITES)
    sizes = args.elements or (QUICK_ELEMENTS if args.quick else DEFAULT_ELEMENTS)
    print(
        f"agentsync {version('agentsync')}, Python {sys.version.split()[0]}; {rounds} rounds, "
        f"{writes:,} idle writes a round; switch interval {sys.getswitchinterval() * 1e3:g} ms",
        flush=True,
    )
    began = time.perf_counter()
    measured: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="agentsync-compaction-") as workdir:
        for elements in sizes:
            result = _measured(elements, rounds, writes, workdir)
            if isinstance(result, str):
                errors[str(elements)] = result
                print(f"ERROR with {elements:,} elements:\n{result}", flush=True)
            else:
                measured.append(result)
    rows = [summarize(m) for m in measured]
    print(
        "\nA counter increment a call on a started node (NORMAL), idle and while the log is "
        "compacted; medians over rounds:"
    )
    print(render(rows))
    for row in rows:
        if row["rounds_skipped"]:
            print(f"{row['elements']:,} elements: {row['rounds_skipped']} round(s) left out")
    wall = time.perf_counter() - began
    print(f"\ntotal {wall:.1f} s" + (f"; {len(errors)} size(s) failed" if errors else ""))
    if args.json:
        report = {
            **report_header(argv),
            "config": {
                "rounds": rounds,
                "writes": writes,
                "elements": list(sizes),
                "quick": args.quick,
                "durability": "normal",
                "node": "Node.start_background, no peers",
            },
            **environment({"build": sys.version}, switch_interval_s=sys.getswitchinterval()),
            "git": git_info(),
            "measured": measured,
            "rows": rows,
            "errors": errors,
            "wall_seconds": wall,
        }
        print(f"wrote {write_json(args.json, report)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
