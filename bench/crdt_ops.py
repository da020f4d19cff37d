#!/usr/bin/env python3
"""Speed of agentsync's mutators and merges against pycrdt and loro, same workload.

Run ``python bench/crdt_ops.py [--json PATH] [--quick] [--rounds N] [--only LIBS]``.

How it measures (the method of the peers' baseline figures it cites):

* Every measurement runs in its own forked child process, which imports only
  the library it measures. Run one after another in a single process these
  libraries slowed each other down 2-3.5x.
* One run, interleaved: each round visits every case, and within a case the
  libraries in round-robin order (the starting library rotates every round),
  so drifting machine load hits every library alike. The table shows the
  median of the rounds; the JSON holds every round.
* "unbatched" is one operation per transaction (pycrdt: ``m[k] = v``, whose
  ``__setitem__`` opens its own transaction; loro: ``commit()`` after every
  op); "batched" is every op in one transaction (pycrdt: one
  ``doc.transaction()``; loro: one ``commit()`` at the end, inside the timing).
  agentsync has no transactions: every mutator applies at once and returns
  its delta, so its only figure is the unbatched one.
* Keys are built before the clock starts; one warm-up pass on a throwaway
  object runs first; the garbage collector stays on, as in real use.

Cases: map set of distinct keys; set add then remove (ORSet); counter
increment (PNCounter, GCounter, LoroCounter); and sync: replica A brings
replica B (both holding ``--sync-base`` keys) up to date after
``--sync-writes`` writes to new keys, timing compute+encode on A and apply
(decode+merge) on B per write, and the delta's bytes per write.

The script exits 0 unless a measurement crashed; the bar and goal checks it
prints at the end are informational.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import multiprocessing
import platform
import pstats
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import util
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchlib import environment, git_info, loadavg, positive, read_first, report_header

OURS = "agentsync"
PEERS = ("pycrdt", "loro")
REFERENCE = "python"
"""Plain Python (dict, set, int): the floor, for scale only."""
LIBS = (OURS, *PEERS, REFERENCE)

CHILD_TIMEOUT_S = 600.0
WARMUP_OPS = 1_000
DEFAULT_ROUNDS = 9

BASELINE = {
    "pycrdt_map_set_unbatched_us": 2.8,
    "pycrdt_delta_bytes_per_op": 16.8,
    "loro_delta_bytes_per_op": 10.0,
}
"""Figures from peers-baseline.md, used only when a peer is not measured in this run."""

GOAL_MUTATION_US = 1.0
GOAL_BYTES_PER_OP = 10.0
GOAL_APPLY_US = 0.6

Metrics = dict[str, float]


@dataclass(frozen=True)
class Config:
    """Workload sizes, shared by every library."""

    ops: int
    sync_base: int
    sync_writes: int


# ---------------------------------------------------------------------------
# Workloads. Each runs inside a forked child and imports its library there.
# ---------------------------------------------------------------------------


_profiler: cProfile.Profile | None = None
"""Set in a child run with --profile: only the timed sections are profiled."""


def _start() -> int:
    """Start a timed section (and the profiler, when profiling)."""
    if _profiler is not None:
        _profiler.enable()
    return time.perf_counter_ns()


def _elapsed(start: int) -> int:
    """End a timed section begun by ``_start``: its nanoseconds."""
    end = time.perf_counter_ns()
    if _profiler is not None:
        _profiler.disable()
    return end - start


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"key{i}" for i in range(start, start + n)]


def _check(got: object, want: object, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: expected {want!r}, got {got!r}")


def _timed_us_per_op(
    make_loop: Callable[[], Callable[[list[str]], object]],
    keys: list[str],
    expect: Callable[[list[str]], object],
) -> float:
    """Warm up on a throwaway object, then time ``loop(keys)`` on a fresh one."""
    warm = keys[:WARMUP_OPS]
    _check(make_loop()(warm), expect(warm), "warm-up result")
    loop = make_loop()
    gc.collect()
    start = _start()
    result = loop(keys)
    elapsed = _elapsed(start)
    _check(result, expect(keys), "result")
    return elapsed / 1000 / len(keys)


# -- map set ------------------------------------------------------------------


def map_ours(cfg: Config) -> Metrics:
    from agentsync.crdt import LWWMap

    def make() -> Callable[[list[str]], object]:
        m = LWWMap("a")
        write = m.set

        def loop(keys: list[str]) -> object:
            for i, key in enumerate(keys):
                write(key, i)
            return len(m)

        return loop

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


def _map_pycrdt(cfg: Config, batched: bool) -> Metrics:
    from pycrdt import Doc, Map

    def make() -> Callable[[list[str]], object]:
        doc: Doc[Any] = Doc()
        m: Map[int] = doc.get("m", type=Map)

        def unbatched(keys: list[str]) -> object:
            for i, key in enumerate(keys):
                m[key] = i  # Map.__setitem__ opens one transaction per op
            return len(m)

        def batched_loop(keys: list[str]) -> object:
            with doc.transaction():
                for i, key in enumerate(keys):
                    m[key] = i
            return len(m)

        return batched_loop if batched else unbatched

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


def map_pycrdt_unbatched(cfg: Config) -> Metrics:
    return _map_pycrdt(cfg, batched=False)


def map_pycrdt_batched(cfg: Config) -> Metrics:
    return _map_pycrdt(cfg, batched=True)


def _map_loro(cfg: Config, batched: bool) -> Metrics:
    from loro import LoroDoc

    def make() -> Callable[[list[str]], object]:
        doc = LoroDoc()
        m = doc.get_map("m")
        insert = m.insert
        commit = doc.commit

        def unbatched(keys: list[str]) -> object:
            for i, key in enumerate(keys):
                insert(key, i)
                commit()
            return len(m)

        def batched_loop(keys: list[str]) -> object:
            for i, key in enumerate(keys):
                insert(key, i)
            commit()
            return len(m)

        return batched_loop if batched else unbatched

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


def map_loro_unbatched(cfg: Config) -> Metrics:
    return _map_loro(cfg, batched=False)


def map_loro_batched(cfg: Config) -> Metrics:
    return _map_loro(cfg, batched=True)


def map_python(cfg: Config) -> Metrics:
    def make() -> Callable[[list[str]], object]:
        d: dict[str, int] = {}

        def loop(keys: list[str]) -> object:
            for i, key in enumerate(keys):
                d[key] = i  # noqa: PERF403  # the loop is what is timed
            return len(d)

        return loop

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


# -- set add / remove ---------------------------------------------------------


def _add_remove(
    make: Callable[[], tuple[Callable[[str], object], Callable[[str], object], Callable[[], int]]],
    keys: list[str],
) -> Metrics:
    """Time adding every key, then removing every key, on one fresh set."""
    warm_add, warm_remove, _ = make()
    for key in keys[:WARMUP_OPS]:
        warm_add(key)
    for key in keys[:WARMUP_OPS]:
        warm_remove(key)
    add, remove, size = make()
    gc.collect()
    start = _start()
    for key in keys:
        add(key)
    added = _elapsed(start)
    _check(size(), len(keys), "size after the adds")
    gc.collect()
    start = _start()
    for key in keys:
        remove(key)
    removed = _elapsed(start)
    _check(size(), 0, "size after the removes")
    return {
        "add_us_per_op": added / 1000 / len(keys),
        "remove_us_per_op": removed / 1000 / len(keys),
    }


def set_ours(cfg: Config) -> Metrics:
    from agentsync.crdt import ORSet

    def make() -> tuple[Callable[[str], object], Callable[[str], object], Callable[[], int]]:
        s = ORSet("a")
        return s.add, s.remove, s.__len__

    return _add_remove(make, _keys(cfg.ops))


def set_python(cfg: Config) -> Metrics:
    def make() -> tuple[Callable[[str], object], Callable[[str], object], Callable[[], int]]:
        s: set[str] = set()
        return s.add, s.remove, s.__len__

    return _add_remove(make, _keys(cfg.ops))


# -- counter increment --------------------------------------------------------


def _counter_ours(cfg: Config, kind: str) -> Metrics:
    from agentsync.crdt import GCounter, PNCounter

    cls = PNCounter if kind == "pn" else GCounter

    def make() -> Callable[[list[str]], object]:
        c = cls("a")
        increment = c.increment

        def loop(keys: list[str]) -> object:
            for _ in keys:
                increment()
            return c.value

        return loop

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


def counter_ours_pn(cfg: Config) -> Metrics:
    return _counter_ours(cfg, "pn")


def counter_ours_g(cfg: Config) -> Metrics:
    return _counter_ours(cfg, "g")


def _counter_loro(cfg: Config, batched: bool) -> Metrics:
    from loro import LoroDoc

    def make() -> Callable[[list[str]], object]:
        doc = LoroDoc()
        c = doc.get_counter("c")
        increment = c.increment
        commit = doc.commit

        def unbatched(keys: list[str]) -> object:
            for _ in keys:
                increment(1)
                commit()
            return int(c.value)

        def batched_loop(keys: list[str]) -> object:
            for _ in keys:
                increment(1)
            commit()
            return int(c.value)

        return batched_loop if batched else unbatched

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


def counter_loro_unbatched(cfg: Config) -> Metrics:
    return _counter_loro(cfg, batched=False)


def counter_loro_batched(cfg: Config) -> Metrics:
    return _counter_loro(cfg, batched=True)


def counter_python(cfg: Config) -> Metrics:
    class Box:
        __slots__ = ("n",)

        def __init__(self) -> None:
            self.n = 0

        def increment(self) -> None:
            self.n += 1

    def make() -> Callable[[list[str]], object]:
        box = Box()
        increment = box.increment

        def loop(keys: list[str]) -> object:
            for _ in keys:
                increment()
            return box.n

        return loop

    return {"us_per_op": _timed_us_per_op(make, _keys(cfg.ops), len)}


# -- sync: A brings B up to date ----------------------------------------------


def _sync_ours(base: int, writes: int) -> Metrics:
    from agentsync.crdt import LWWMap, decode, encode

    a = LWWMap("a")
    for i, key in enumerate(_keys(base)):
        a.set(key, i)
    b = LWWMap("b")
    b.merge(a)
    _check(len(b), base, "B before the sync")
    deltas = [a.set(key, base + i) for i, key in enumerate(_keys(writes, base))]
    gc.collect()

    start = _start()
    # No state-difference API: the deltas the writes returned are joined into one group.
    group = deltas[0]
    for delta in deltas[1:]:
        group.merge(delta)
    compute = _elapsed(start)
    start = _start()
    data = encode(group)
    encoded = _elapsed(start)
    del deltas, group
    gc.collect()
    start = _start()
    received = decode(data)
    decoded = _elapsed(start)
    start = _start()
    b.merge(received)  # type: ignore[arg-type]  # decode returns the CRDT base type
    merged = _elapsed(start)

    _check(len(b), base + writes, "B after the sync")
    last = base + writes - 1
    _check(b[f"key{last}"], last, "B's newest key")
    per_op = 1000 * writes
    return {
        "compute_encode_us_per_op": (compute + encoded) / per_op,
        "apply_us_per_op": (decoded + merged) / per_op,
        "bytes_per_op": len(data) / writes,
        "compute_us_per_op": compute / per_op,
        "encode_us_per_op": encoded / per_op,
        "decode_us_per_op": decoded / per_op,
        "merge_us_per_op": merged / per_op,
    }


def _sync_pycrdt(base: int, writes: int) -> Metrics:
    from pycrdt import Doc, Map

    a: Doc[Any] = Doc()
    ma: Map[int] = a.get("m", type=Map)
    with a.transaction():
        for i, key in enumerate(_keys(base)):
            ma[key] = i
    b: Doc[Any] = Doc()
    mb: Map[int] = b.get("m", type=Map)
    b.apply_update(a.get_update())
    _check(len(mb), base, "B before the sync")
    for i, key in enumerate(_keys(writes, base)):
        ma[key] = base + i  # one transaction per write
    state = b.get_state()  # what B sends A
    gc.collect()

    start = _start()
    data = a.get_update(state)
    computed = _elapsed(start)
    start = _start()
    b.apply_update(data)
    applied = _elapsed(start)

    _check(len(mb), base + writes, "B after the sync")
    per_op = 1000 * writes
    return {
        "compute_encode_us_per_op": computed / per_op,
        "apply_us_per_op": applied / per_op,
        "bytes_per_op": len(data) / writes,
    }


def _sync_loro(base: int, writes: int) -> Metrics:
    from loro import ExportMode, LoroDoc

    a = LoroDoc()
    ma = a.get_map("m")
    for i, key in enumerate(_keys(base)):
        ma.insert(key, i)
    a.commit()
    b = LoroDoc()
    b.import_(a.export(ExportMode.Snapshot()))
    _check(len(b.get_map("m")), base, "B before the sync")
    for i, key in enumerate(_keys(writes, base)):
        ma.insert(key, base + i)
        a.commit()  # one commit per write
    version = b.oplog_vv  # what B sends A
    gc.collect()

    start = _start()
    data = a.export(ExportMode.Updates(version))
    computed = _elapsed(start)
    start = _start()
    b.import_(data)
    applied = _elapsed(start)

    _check(len(b.get_map("m")), base + writes, "B after the sync")
    per_op = 1000 * writes
    return {
        "compute_encode_us_per_op": computed / per_op,
        "apply_us_per_op": applied / per_op,
        "bytes_per_op": len(data) / writes,
    }


def _with_warmup(sync: Callable[[int, int], Metrics], cfg: Config) -> Metrics:
    sync(100, 110)
    return sync(cfg.sync_base, cfg.sync_writes)


def sync_ours(cfg: Config) -> Metrics:
    return _with_warmup(_sync_ours, cfg)


def sync_pycrdt(cfg: Config) -> Metrics:
    return _with_warmup(_sync_pycrdt, cfg)


def sync_loro(cfg: Config) -> Metrics:
    return _with_warmup(_sync_loro, cfg)


# ---------------------------------------------------------------------------
# Jobs, rows and checks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One measurement: a (case, library, variant) run in a forked child."""

    case: str
    lib: str
    variant: str
    fn: Callable[[Config], Metrics]

    @property
    def name(self) -> str:
        return f"{self.case}/{self.lib}/{self.variant}"


CASES = ("map_set", "set", "counter", "sync")

JOBS = (
    Job("map_set", OURS, "unbatched", map_ours),
    Job("map_set", "pycrdt", "unbatched", map_pycrdt_unbatched),
    Job("map_set", "pycrdt", "batched", map_pycrdt_batched),
    Job("map_set", "loro", "unbatched", map_loro_unbatched),
    Job("map_set", "loro", "batched", map_loro_batched),
    Job("map_set", REFERENCE, "dict", map_python),
    Job("set", OURS, "orset", set_ours),
    Job("set", REFERENCE, "set", set_python),
    Job("counter", OURS, "pncounter", counter_ours_pn),
    Job("counter", OURS, "gcounter", counter_ours_g),
    Job("counter", "loro", "unbatched", counter_loro_unbatched),
    Job("counter", "loro", "batched", counter_loro_batched),
    Job("counter", REFERENCE, "int", counter_python),
    Job("sync", OURS, "delta", sync_ours),
    Job("sync", "pycrdt", "update", sync_pycrdt),
    Job("sync", "loro", "updates", sync_loro),
)

NO_SET = "n/a: no set type"
NO_COUNTER = "n/a: no counter type"

Ref = tuple[str, str, str, str]
"""(case, lib, variant, metric): one measured series."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a measured series (or an n/a reason) per library."""

    key: str
    label: str
    unit: str
    cells: dict[str, Ref | str]
    ours_note: str = ""


def _rows() -> list[Row]:
    def ref(case: str, lib: str, variant: str, metric: str = "us_per_op") -> Ref:
        return (case, lib, variant, metric)

    ours_map = ref("map_set", OURS, "unbatched")
    ours_pn = ref("counter", OURS, "pncounter")
    return [
        Row(
            "map_set_unbatched",
            "map set, unbatched",
            "us/op",
            {
                OURS: ours_map,
                "pycrdt": ref("map_set", "pycrdt", "unbatched"),
                "loro": ref("map_set", "loro", "unbatched"),
                REFERENCE: ref("map_set", REFERENCE, "dict"),
            },
        ),
        Row(
            "map_set_batched",
            "map set, batched",
            "us/op",
            {
                OURS: ours_map,
                "pycrdt": ref("map_set", "pycrdt", "batched"),
                "loro": ref("map_set", "loro", "batched"),
            },
            ours_note="*",
        ),
        Row(
            "set_add",
            "set add (ORSet)",
            "us/op",
            {
                OURS: ref("set", OURS, "orset", "add_us_per_op"),
                "pycrdt": NO_SET,
                "loro": NO_SET,
                REFERENCE: ref("set", REFERENCE, "set", "add_us_per_op"),
            },
        ),
        Row(
            "set_remove",
            "set remove (ORSet)",
            "us/op",
            {
                OURS: ref("set", OURS, "orset", "remove_us_per_op"),
                "pycrdt": NO_SET,
                "loro": NO_SET,
                REFERENCE: ref("set", REFERENCE, "set", "remove_us_per_op"),
            },
        ),
        Row(
            "pncounter_unbatched",
            "PNCounter increment, unbatched",
            "us/op",
            {
                OURS: ours_pn,
                "pycrdt": NO_COUNTER,
                "loro": ref("counter", "loro", "unbatched"),
                REFERENCE: ref("counter", REFERENCE, "int"),
            },
        ),
        Row(
            "gcounter_unbatched",
            "GCounter increment, unbatched",
            "us/op",
            {
                OURS: ref("counter", OURS, "gcounter"),
                "pycrdt": NO_COUNTER,
                "loro": ref("counter", "loro", "unbatched"),
                REFERENCE: ref("counter", REFERENCE, "int"),
            },
        ),
        Row(
            "counter_batched",
            "counter increment, batched",
            "us/op",
            {
                OURS: ours_pn,
                "pycrdt": NO_COUNTER,
                "loro": ref("counter", "loro", "batched"),
            },
            ours_note="*",
        ),
        Row(
            "sync_compute_encode",
            "sync: compute+encode (A)",
            "us/op",
            {
                OURS: ref("sync", OURS, "delta", "compute_encode_us_per_op"),
                "pycrdt": ref("sync", "pycrdt", "update", "compute_encode_us_per_op"),
                "loro": ref("sync", "loro", "updates", "compute_encode_us_per_op"),
            },
        ),
        Row(
            "sync_apply",
            "sync: apply = decode+merge (B)",
            "us/op",
            {
                OURS: ref("sync", OURS, "delta", "apply_us_per_op"),
                "pycrdt": ref("sync", "pycrdt", "update", "apply_us_per_op"),
                "loro": ref("sync", "loro", "updates", "apply_us_per_op"),
            },
        ),
        Row(
            "sync_bytes",
            "sync: delta size",
            "bytes/op",
            {
                OURS: ref("sync", OURS, "delta", "bytes_per_op"),
                "pycrdt": ref("sync", "pycrdt", "update", "bytes_per_op"),
                "loro": ref("sync", "loro", "updates", "bytes_per_op"),
            },
        ),
    ]


BREAKDOWN = (
    ("group merge of the deltas", "compute_us_per_op"),
    ("encode", "encode_us_per_op"),
    ("decode", "decode_us_per_op"),
    ("merge into B", "merge_us_per_op"),
)
"""agentsync's sync time, step by step."""


# ---------------------------------------------------------------------------
# Running children
# ---------------------------------------------------------------------------


def _child(conn: Connection, job: Job, cfg: Config, profile: bool) -> None:
    try:
        if profile:
            global _profiler  # noqa: PLW0603  # this forked child's own copy
            _profiler = cProfile.Profile()
            metrics = job.fn(cfg)
            out = io.StringIO()
            stats = pstats.Stats(_profiler, stream=out)
            stats.sort_stats("tottime").print_stats(16)
            conn.send(("ok", metrics, out.getvalue()))
        else:
            conn.send(("ok", job.fn(cfg), ""))
    except BaseException:
        conn.send(("error", traceback.format_exc(), ""))
    finally:
        conn.close()


def run_in_child(job: Job, cfg: Config, profile: bool = False) -> tuple[Metrics | None, str]:
    """Run one job in a forked child: (metrics, profile text) or (None, traceback)."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, job, cfg, profile), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(CHILD_TIMEOUT_S):
            process.kill()
            return None, f"timed out after {CHILD_TIMEOUT_S:.0f} s"
        status, payload, text = receiver.recv()
    except EOFError:
        process.join()
        return None, f"the child died (exit code {process.exitcode})"
    finally:
        receiver.close()
    process.join()
    if status != "ok":
        return None, str(payload)
    return dict(payload), str(text)


def _rotated(items: list[str], by: int) -> list[str]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


@dataclass
class Series:
    """The per-round values of one job metric."""

    rounds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "median": self.median,
            "min": min(self.rounds),
            "max": max(self.rounds),
        }


def run_rounds(
    jobs: list[Job], cfg: Config, rounds: int, log: Callable[[str], None]
) -> tuple[dict[str, dict[str, Series]], dict[str, str]]:
    """Every round: every case, libraries round-robin. Returns series and errors."""
    series: dict[str, dict[str, Series]] = {job.name: {} for job in jobs}
    errors: dict[str, str] = {}
    for r in range(rounds):
        started = time.perf_counter()
        for case in CASES:
            case_jobs = [job for job in jobs if job.case == case]
            libs = _rotated(list(dict.fromkeys(job.lib for job in case_jobs)), r)
            for lib in libs:
                for job in (j for j in case_jobs if j.lib == lib):
                    if job.name in errors:
                        continue
                    metrics, text = run_in_child(job, cfg)
                    if metrics is None:
                        errors[job.name] = text
                        log(f"ERROR in {job.name} (round {r + 1}):\n{text}")
                        continue
                    for metric, value in metrics.items():
                        series[job.name].setdefault(metric, Series([])).rounds.append(value)
        log(f"round {r + 1}/{rounds} done in {time.perf_counter() - started:.1f} s")
    return series, errors


def profile_ours(jobs: list[Job], cfg: Config, log: Callable[[str], None]) -> dict[str, str]:
    """One cProfile run of each agentsync job, in its own child."""
    reports: dict[str, str] = {}
    for job in jobs:
        if job.lib != OURS:
            continue
        _, text = run_in_child(job, cfg, profile=True)
        reports[job.name] = text
        log(f"--- cProfile of the timed sections: {job.name} ---\n{text.strip()}\n")
    return reports


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _median(series: dict[str, dict[str, Series]], ref: Ref) -> float | None:
    case, lib, variant, metric = ref
    found = series.get(f"{case}/{lib}/{variant}", {}).get(metric)
    return found.median if found and found.rounds else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def build_rows(rows: list[Row], series: dict[str, dict[str, Series]]) -> list[dict[str, Any]]:
    """Medians and peer/ours ratios per row (a ratio >= 1.0: ours is faster or smaller)."""
    built = []
    for row in rows:
        values: dict[str, float | str | None] = {}
        for lib in LIBS:
            cell = row.cells.get(lib)
            values[lib] = (
                cell if isinstance(cell, str) else (_median(series, cell) if cell else None)
            )
        ours = values.get(OURS)
        ratios: dict[str, float | None] = {}
        for peer in PEERS:
            theirs = values.get(peer)
            ok = isinstance(ours, float) and isinstance(theirs, float) and ours > 0
            ratios[peer] = theirs / ours if ok else None  # type: ignore[operator]
        built.append(
            {
                "key": row.key,
                "label": row.label + (f" {row.ours_note}" if row.ours_note else ""),
                "unit": row.unit,
                "medians": values,
                "ratios": ratios,
            }
        )
    return built


def render_table(built: list[dict[str, Any]]) -> str:
    header = ["case", "unit", *LIBS, *(f"{p}/ours" for p in PEERS)]
    lines = [header]
    for row in built:
        cells = [row["label"], row["unit"]]
        for lib in LIBS:
            value = row["medians"][lib]
            cells.append(value if isinstance(value, str) else _fmt(value))
        for peer in PEERS:
            ratio = row["ratios"][peer]
            cells.append("-" if ratio is None else f"{ratio:.2f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        first = line[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


@dataclass(frozen=True)
class Check:
    """One PASS/MISS line: informational, never the exit status."""

    kind: str
    name: str
    status: str
    detail: str


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def build_checks(built: list[dict[str, Any]]) -> list[Check]:
    by_key = {row["key"]: row for row in built}

    def med(key: str, lib: str) -> float | None:
        value = by_key[key]["medians"].get(lib)
        return value if isinstance(value, float) else None

    checks: list[Check] = []
    pycrdt_map = med("map_set_unbatched", "pycrdt")
    if pycrdt_map is None:
        pycrdt_map, source = BASELINE["pycrdt_map_set_unbatched_us"], "baseline figure"
    else:
        source = "this run"
    mutations = [
        ("map set, unbatched", "map_set_unbatched", ""),
        ("ORSet add", "set_add", "; pycrdt has no set type, its map set stands in"),
        ("ORSet remove", "set_remove", "; pycrdt has no set type, its map set stands in"),
        (
            "PNCounter increment",
            "pncounter_unbatched",
            "; pycrdt has no counter type, its map set stands in",
        ),
        (
            "GCounter increment",
            "gcounter_unbatched",
            "; pycrdt has no counter type, its map set stands in",
        ),
    ]
    for label, key, note in mutations:
        ours = med(key, OURS)
        ok = None if ours is None else pycrdt_map >= ours
        ratio = f"ratio {pycrdt_map / ours:.2f}" if ours else "not measured"
        checks.append(
            Check(
                "bar",
                f"{label} at least as fast as pycrdt unbatched",
                _status(ok),
                f"ours {_fmt(ours)} us vs pycrdt {_fmt(pycrdt_map)} us ({source}), {ratio}{note}",
            )
        )
    ours_bytes = med("sync_bytes", OURS)
    pycrdt_bytes = med("sync_bytes", "pycrdt")
    if pycrdt_bytes is None:
        pycrdt_bytes, source = BASELINE["pycrdt_delta_bytes_per_op"], "baseline figure"
    else:
        source = f"this run; baseline {BASELINE['pycrdt_delta_bytes_per_op']}"
    checks.append(
        Check(
            "bar",
            "delta bytes/op <= pycrdt",
            _status(None if ours_bytes is None else ours_bytes <= pycrdt_bytes),
            f"ours {_fmt(ours_bytes)} vs pycrdt {_fmt(pycrdt_bytes)} ({source})",
        )
    )
    for label, key, _ in mutations:
        ours = med(key, OURS)
        checks.append(
            Check(
                "goal",
                f"{label} <= {GOAL_MUTATION_US:g} us",
                _status(None if ours is None else ours <= GOAL_MUTATION_US),
                f"ours {_fmt(ours)} us",
            )
        )
    loro_bytes = med("sync_bytes", "loro")
    checks.append(
        Check(
            "goal",
            f"delta bytes/op <= {GOAL_BYTES_PER_OP:g} (loro's baseline)",
            _status(None if ours_bytes is None else ours_bytes <= GOAL_BYTES_PER_OP),
            f"ours {_fmt(ours_bytes)}; loro {_fmt(loro_bytes)} in this run",
        )
    )
    ours_apply = med("sync_apply", OURS)
    checks.append(
        Check(
            "goal",
            f"apply <= {GOAL_APPLY_US:g} us/op",
            _status(None if ours_apply is None else ours_apply <= GOAL_APPLY_US),
            f"ours {_fmt(ours_apply)} us; pycrdt {_fmt(med('sync_apply', 'pycrdt'))}, "
            f"loro {_fmt(med('sync_apply', 'loro'))} in this run",
        )
    )
    return checks


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def measured_environment() -> dict[str, Any]:
    """The report's python, machine and versions blocks, taken as the run starts."""
    return environment(
        {"implementation": platform.python_implementation(), "build": sys.version},
        versions=(*PEERS, "msgpack"),
        machine=platform.machine(),
        processor=platform.processor() or None,
        mem_total=read_first("/proc/meminfo", "MemTotal"),
        loadavg_at_start=loadavg(),
    )


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time agentsync's mutators and merges against pycrdt and loro."
    )
    parser.add_argument("--json", metavar="PATH", help="write every round and the medians here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 5,000 ops, a 1,000-key sync, 3 rounds"
    )
    parser.add_argument("--rounds", type=positive, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--ops", type=positive, help="ops per mutation case (default 100,000)")
    parser.add_argument("--sync-base", type=positive, help="keys both replicas hold (10,000)")
    parser.add_argument("--sync-writes", type=positive, help="new writes A sends B (11,000)")
    parser.add_argument(
        "--only", metavar="LIBS", help=f"comma-separated subset of {','.join(LIBS)}"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run each agentsync case once under cProfile and print it",
    )
    return parser.parse_args(argv)


def _select_libs(only: str | None) -> list[str]:
    if not only:
        return list(LIBS)
    wanted = [lib.strip() for lib in only.split(",") if lib.strip()]
    unknown = [lib for lib in wanted if lib not in LIBS]
    if unknown:
        raise SystemExit(f"--only: unknown libraries {unknown}; choose from {list(LIBS)}")
    return wanted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    rounds = args.rounds or (3 if args.quick else DEFAULT_ROUNDS)
    cfg = Config(
        ops=args.ops or (5_000 if args.quick else 100_000),
        sync_base=args.sync_base or (1_000 if args.quick else 10_000),
        sync_writes=args.sync_writes or (1_100 if args.quick else 11_000),
    )

    def log(text: str) -> None:
        print(text, flush=True)

    libs = _select_libs(args.only)
    skipped: dict[str, str] = {}
    for lib in libs:
        if lib != REFERENCE and util.find_spec(lib) is None:
            skipped[lib] = "not installed"
    jobs = [job for job in JOBS if job.lib in libs and job.lib not in skipped]
    for lib, reason in skipped.items():
        log(f"skipping {lib}: {reason} (pip install -e '.[bench]')")

    env = measured_environment()
    versions = env["versions"]
    log(
        f"agentsync {versions['agentsync']} vs pycrdt {versions['pycrdt']}, "
        f"loro {versions['loro']}; Python {platform.python_version()}; "
        f"{cfg.ops:,} ops per mutation case, sync {cfg.sync_writes:,} writes onto "
        f"{cfg.sync_base:,} keys; {rounds} rounds, {len(jobs)} forked children per round"
    )
    series, errors = run_rounds(jobs, cfg, rounds, log)
    profiles = profile_ours(jobs, cfg, log) if args.profile else {}

    built = build_rows(_rows(), series)
    checks = build_checks(built)
    log("")
    log(
        f"Median of {rounds} rounds, each case in its own forked child, interleaved. "
        "Ratio = peer/ours: >= 1.00 means agentsync is faster (or smaller)."
    )
    log(render_table(built))
    log(
        "* agentsync has no batch mode: each mutation applies at once and returns its "
        "delta, so its figure is the unbatched one."
    )
    breakdown = [
        (label, _median(series, ("sync", OURS, "delta", metric))) for label, metric in BREAKDOWN
    ]
    if any(value is not None for _, value in breakdown):
        log(
            "agentsync sync, us per write: "
            + ", ".join(f"{label} {_fmt(value)}" for label, value in breakdown)
        )
    log("")
    for check in checks:
        log(f"{check.status:<4}  {check.kind:<4}  {check.name}: {check.detail}")
    wall = time.perf_counter() - began
    log(f"\ntotal {wall:.1f} s" + (f"; {len(errors)} measurement(s) failed" if errors else ""))

    if args.json:
        report = {
            **report_header(argv),
            "config": {
                **asdict(cfg),
                "rounds": rounds,
                "quick": args.quick,
                "libs": libs,
                "warmup_ops": WARMUP_OPS,
                "gc_enabled": gc.isenabled(),
                "start_method": "fork",
                "timer": "time.perf_counter_ns",
            },
            **env,
            "machine": {**env["machine"], "loadavg_at_end": loadavg()},
            "git": git_info(),
            "skipped": skipped,
            "jobs": {
                job.name: {
                    "case": job.case,
                    "lib": job.lib,
                    "variant": job.variant,
                    "metrics": {m: s.summary() for m, s in series[job.name].items()},
                }
                for job in jobs
            },
            "rows": built,
            "checks": [asdict(check) for check in checks],
            "baseline": BASELINE,
            "errors": errors,
            "profiles": profiles,
            "wall_seconds": wall,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
