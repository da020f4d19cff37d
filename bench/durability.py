#!/usr/bin/env python3
"""Durable writes per second: a Node with ``data_dir`` against raw SQLite, same run.

Run ``python bench/durability.py [--json PATH] [--quick] [--rounds N] [--seconds S]``.

What it measures (issue 5, "Speed"):

* **ours**: a ``Node(data_dir=..., durability=MODE)`` with no peers, not
  started (writes work on an unstarted Node), doing one of two small writes:
  ``node.set("tasks").add(f"t{i}")`` (ORSet add) or
  ``node.counter("done").increment()`` (PNCounter increment). *unbatched* is
  one write per call, each logged in its own transaction before the call
  returns; *batch100* is 100 writes per ``with node.batch():``, logged in one
  transaction as the block ends (as one joined delta). Both in
  ``durability="full"`` and ``"normal"``. Beside them, not one of the
  issue's figures: ``node.set("tasks").update(keys)`` of 100 keys a call
  (one write, one commit), against the set adds' raw ceiling in batches of
  100, to show what the per-call cost of a set add is.
* **raw**: the ceiling. Python's ``sqlite3`` on a fresh file, WAL,
  ``synchronous`` FULL or NORMAL, a table shaped like the store's log
  (``seq INTEGER PRIMARY KEY, delta BLOB``); *unbatched* is one ``INSERT`` of
  one blob per commit (autocommit), *batch100* is 100 rows per transaction.
  Each blob is as long as the median delta one write of that op logs
  unbatched in that mode (measured first, in the calibration pass, from
  ours' own log table), in both batchings: a row per write.
* **memory**: the same writes on a ``Node`` without ``data_dir``, so the
  reader sees how much of a durable write is Python and CRDT work and how
  much is the commit.

How:

* Every measurement runs in its own forked child, in a fresh temporary
  directory on the filesystem it reports (by default the system temp
  directory when it is on the repository's filesystem, else ``bench/results``;
  ``--dir`` chooses). A tmpfs is refused: it has no fsync to pay.
* A calibration pass first runs every case for ``--seconds`` of wall clock and
  fixes its write count (a multiple of 100) for every round, so each
  measurement lasts about that long and every round does the same work.
* Then ``--rounds`` rounds, interleaved: each round visits every case, its
  order rotated round by round, so drifting machine load hits every case
  alike. Each measurement: open (untimed), 100 warm-up writes (untimed), the
  timed writes, close (untimed), then a check that the log holds every
  write: its rows (one per write, or per batch), and the value read back
  from it. The garbage collector stays on, as in real use.
* Figures are the median and min-max of the rounds. Ratios ours/raw are
  paired within a round (same op, mode and batching), then the median and
  min-max of those. The bar: every ours/raw ratio >= 0.70. *serial bound*
  is ``1 / (1/memory + 1/raw)``, what ours would reach if a durable write
  cost exactly its in-memory write plus one raw commit: a ratio above
  serial/raw needs the two to overlap.
* A profile of one unbatched ``"normal"`` write of each op closes the run:
  wall-clock timers around the steps of ``Node._write`` (the CRDT update,
  ``encode`` of the delta, ``Store.log``: the SQLite transaction, split into
  its statements, and the sync engine's ``record_local``), and cProfile's
  top functions. Then a few ways to commit one blob on a raw connection, in
  both modes (autocommit or an explicit ``BEGIN IMMEDIATE ... COMMIT``,
  ``execute`` or ``executemany``, with and without
  ``locking_mode=EXCLUSIVE``, and with the store's own settings: exclusive
  and its page size), 3 passes each, show what a cheaper commit would buy.

The script exits 0 unless a measurement crashed; the bar check is
informational.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import multiprocessing
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    environment,
    git_info,
    loadavg,
    positive,
    report_header,
    version,
    write_json,
)

OPS = ("set_add", "counter_increment", "set_update")
OP_LABELS = {
    "set_add": 'node.set("tasks").add(f"t{i}")',
    "counter_increment": 'node.counter("done").increment()',
    "set_update": 'node.set("tasks").update(100 keys)',
}
BAR_OPS = ("set_add", "counter_increment")
"""The issue's figures, one write a call; ``set_update`` is shown beside them."""
RAW_OF = {"set_update": "set_add"}
"""An op measured against another's raw ceiling: 100 set elements a call are 100 rows."""
MODES = ("full", "normal")
BATCHINGS = ("unbatched", "batch100")
BATCH = 100
WARMUP_WRITES = 100
BAR_RATIO = 0.70
DEFAULT_ROUNDS = 5
DEFAULT_SECONDS = 0.75
CHILD_TIMEOUT_S = 300.0
PROFILE_WRITES = 20_000
CALIBRATION_MAX_PER_S = 600_000
"""A calibration run stops at this rate's worth of writes (keys are built beforehand)."""
DB_FILE = "agentsync.db"  # the store's file name in data_dir (agentsync.store.sqlite.DB_FILE)


@dataclass(frozen=True)
class Case:
    """One measurement: who writes (ours, raw, memory), which op, mode and batching."""

    kind: str
    op: str
    mode: str  # "full", "normal", or "-" for memory
    batching: str

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.op}/{self.mode}/{self.batching}"


def batchings(op: str) -> tuple[str, ...]:
    """``set_update`` writes a batch's 100 elements in one call: it has no unbatched case."""
    return ("batch100",) if op == "set_update" else BATCHINGS


def all_cases() -> list[Case]:
    cases = []
    for op in OPS:
        for batching in batchings(op):
            for mode in MODES:
                cases.append(Case("ours", op, mode, batching))
                if op not in RAW_OF:
                    cases.append(Case("raw", op, mode, batching))
            cases.append(Case("memory", op, "-", batching))
    return cases


# ---------------------------------------------------------------------------
# Workloads, each run in a forked child.
# ---------------------------------------------------------------------------


class Clock:
    """Times either a fixed count of writes or as many as fit in some seconds."""

    def __init__(self, count: int | None, seconds: float | None) -> None:
        self.count = count
        self.seconds = seconds

    def capacity(self) -> int:
        """How many writes to prepare keys or blobs for (warm-up included)."""
        if self.count is not None:
            return self.count + 2 * BATCH
        assert self.seconds is not None
        return int(CALIBRATION_MAX_PER_S * self.seconds) + 2 * BATCH

    def run(self, do_batch: Callable[[int], None]) -> tuple[int, float]:
        """Call ``do_batch(start)`` for writes start..start+99 until done: (writes, seconds)."""
        gc.collect()
        done = 0
        began = time.perf_counter()
        if self.count is not None:
            for start in range(0, self.count, BATCH):
                do_batch(start)
            done = self.count
        else:
            assert self.seconds is not None
            deadline = began + self.seconds
            limit = self.capacity() - 2 * BATCH
            while time.perf_counter() < deadline and done + BATCH <= limit:
                do_batch(done)
                done += BATCH
        return done, time.perf_counter() - began


def _node_writer(node: Any, op: str, batching: str, total: int) -> Callable[[int], None]:
    """``do_batch(start)``: 100 writes of ``op`` on ``node``, in one batch or not
    (``set_update``: one write of 100 elements, one commit with no batch needed)."""
    if op == "set_update":
        update = node.set("tasks").update
        elements = [f"t{i}" for i in range(total)]

        def write_100(start: int) -> None:
            update(elements[start : start + BATCH])

        return write_100
    if op == "set_add":
        add = node.set("tasks").add
        keys = [f"t{i}" for i in range(total)]

        def writes(start: int) -> None:
            for key in keys[start : start + BATCH]:
                add(key)

    else:
        increment = node.counter("done").increment
        span = range(BATCH)

        def writes(start: int) -> None:
            for _ in span:
                increment()

    if batching == "unbatched":
        return writes
    batch = node.batch

    def batched(start: int) -> None:
        with batch():
            writes(start)

    return batched


def run_node(case: Case, clock: Clock, workdir: str) -> dict[str, float]:
    from agentsync import Node

    data_dir = os.path.join(workdir, "node") if case.kind == "ours" else None
    kwargs: dict[str, Any] = {"data_dir": data_dir}
    if case.kind == "ours":
        kwargs["durability"] = case.mode
    node = Node("bench", **kwargs)
    total = clock.capacity()
    try:
        do_batch = _node_writer(node, case.op, case.batching, total)
        do_batch(total - BATCH)  # warm-up on the last keys, never reused by the timed run
        writes, elapsed = clock.run(do_batch)
    finally:
        asyncio.run(node.stop())
    result = {"writes": float(writes), "seconds": elapsed, "per_s": writes / elapsed}
    if data_dir is not None:
        with sqlite3.connect(os.path.join(data_dir, DB_FILE)) as db:
            rows, median_bytes = _log_rows(db)
        db.close()
        logged = writes + WARMUP_WRITES
        expected = logged if case.batching == "unbatched" else logged // BATCH
        if rows != expected:
            raise AssertionError(f"the log holds {rows} rows, not {expected}")
        _check_logged(data_dir, case.op, logged)
        result["delta_bytes"] = median_bytes
    return result


def _check_logged(data_dir: str, op: str, logged: int) -> None:
    """The state read back from the store holds all ``logged`` writes."""
    from agentsync.store import Store

    store = Store(data_dir)
    try:
        stored = store.load()
    finally:
        store.close()
    assert stored is not None
    value = stored.state.value
    held = value["done"] if op == "counter_increment" else len(value["tasks"])
    if held != logged:
        raise AssertionError(f"the log holds {held} writes, not {logged}")


def _log_rows(db: sqlite3.Connection) -> tuple[int, float]:
    lengths = [n for (n,) in db.execute("SELECT length(delta) FROM log")]
    return len(lengths), float(statistics.median(lengths)) if lengths else 0.0


def _raw_connect(path: str, mode: str, pragmas: tuple[str, ...] = ()) -> sqlite3.Connection:
    """A new file in WAL mode with the log table; ``pragmas`` run first (a page size must)."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in pragmas:
        db.execute(f"PRAGMA {pragma}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={mode.upper()}")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, delta BLOB NOT NULL)")
    return db


def run_raw(case: Case, clock: Clock, workdir: str, blob_bytes: int) -> dict[str, float]:
    db = _raw_connect(os.path.join(workdir, "raw.db"), case.mode)
    total = clock.capacity()
    blobs = [os.urandom(blob_bytes) for _ in range(min(total, 200_000))]
    n_blobs = len(blobs)
    execute = db.execute
    insert = "INSERT INTO log (delta) VALUES (?)"

    if case.batching == "unbatched":

        def do_batch(start: int) -> None:
            for i in range(start, start + BATCH):
                execute(insert, (blobs[i % n_blobs],))  # autocommit: one commit per row

    else:
        executemany = db.executemany

        def do_batch(start: int) -> None:
            i = start % n_blobs
            rows = [(blob,) for blob in blobs[i : i + BATCH]]
            if len(rows) < BATCH:
                rows += [(blob,) for blob in blobs[: BATCH - len(rows)]]
            execute("BEGIN")
            executemany(insert, rows)
            execute("COMMIT")

    try:
        do_batch(n_blobs - BATCH)  # warm-up
        writes, elapsed = clock.run(do_batch)
        rows = db.execute("SELECT count(*) FROM log").fetchone()[0]
    finally:
        db.close()
    if rows != writes + WARMUP_WRITES:
        raise AssertionError(f"the table holds {rows} rows, not {writes + WARMUP_WRITES}")
    return {"writes": float(writes), "seconds": elapsed, "per_s": writes / elapsed}


# -- profile of one unbatched "normal" write -----------------------------------------


class _TimedConnection:
    """Stands in for a store's sqlite3 connection or cursor: times each statement by its
    first word."""

    def __init__(self, db: sqlite3.Connection | sqlite3.Cursor, times: dict[str, int]) -> None:
        self._db = db
        self._times = times

    def _timed(self, fn: Callable[..., Any], sql: str, *args: Any) -> Any:
        began = time.perf_counter_ns()
        try:
            return fn(sql, *args)
        finally:
            key = "sql " + " ".join(sql.split()[:2]).lower()
            self._times[key] = self._times.get(key, 0) + time.perf_counter_ns() - began

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed(self._db.execute, sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed(self._db.executemany, sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _timed_fn(fn: Callable[..., Any], key: str, times: dict[str, int]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            times[key] = times.get(key, 0) + time.perf_counter_ns() - began

    return wrapper


PROFILE_CHUNKS = 10
"""The profile alternates this many chunks without timers and with them."""


def run_profile(op: str, workdir: str, writes: int) -> dict[str, Any]:
    """Timers around each step of an unbatched ``"normal"`` write, then cProfile of more.

    The writes run in chunks, alternately without the timers and with them,
    so that the totals with and without compare under the same load. The
    timers reach into Node's internals, by their names at the commit
    measured; a step whose name is gone is left untimed (it lands in "rest").
    """
    import agentsync.node as node_module
    import agentsync.store.sqlite as store_module
    from agentsync import Node

    times: dict[str, int] = {}
    undo: list[tuple[object, str, object]] = []

    def wrap(owner: object, attr: str, key: str) -> None:
        if owner is not None and hasattr(owner, attr):
            undo.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, _timed_fn(getattr(owner, attr), key, times))

    def timers_in(node: Any) -> None:
        wrap(node_module, "_update", "CRDT update (_update)")
        wrap(node_module, "encode", "encode the delta")  # where it ran before fc5f8d8
        wrap(store_module, "encode", "encode the delta")  # in Store.append since
        store = getattr(node, "_store", None)
        wrap(store, "log", "Store.log (the SQLite transaction)")
        wrap(store, "_insert", "Store._insert (the SQLite transaction)")
        for attr in ("_db", "_cursor"):  # the store's connection, and the cursor it keeps
            held = getattr(store, attr, None)
            if isinstance(held, (sqlite3.Connection, sqlite3.Cursor)):
                undo.append((store, attr, held))
                setattr(store, attr, _TimedConnection(held, times))
        wrap(getattr(node, "_engine", None), "record_local", "engine.record_local")

    def timers_out() -> None:
        while undo:
            owner, attr, value = undo.pop()
            setattr(owner, attr, value)

    chunk = max(BATCH, writes // PROFILE_CHUNKS // BATCH * BATCH)
    node = Node("bench", data_dir=os.path.join(workdir, "timers"), durability="normal")
    plain: list[float] = []
    timed_totals: list[float] = []
    try:
        do_batch = _node_writer(node, op, "unbatched", 2 * chunk * PROFILE_CHUNKS + BATCH)
        do_batch(2 * chunk * PROFILE_CHUNKS)  # warm-up
        at = 0
        for _ in range(PROFILE_CHUNKS):
            for with_timers in (False, True):
                if with_timers:
                    timers_in(node)
                gc.collect()
                began = time.perf_counter_ns()
                for start in range(at, at + chunk, BATCH):
                    do_batch(start)
                elapsed = (time.perf_counter_ns() - began) / chunk / 1000
                timers_out()
                (timed_totals if with_timers else plain).append(elapsed)
                at += chunk
        timed = dict(times)  # before stop() runs statements of its own
    finally:
        timers_out()
        asyncio.run(node.stop())
    timed_writes = chunk * PROFILE_CHUNKS
    per_write = {key: ns / timed_writes / 1000 for key, ns in timed.items()}
    per_write["total (with the timers)"] = statistics.fmean(timed_totals)
    per_write["total (no timers, the chunks between)"] = statistics.fmean(plain)

    node = Node("bench", data_dir=os.path.join(workdir, "cprofile"), durability="normal")
    profiler = cProfile.Profile()
    try:
        do_batch = _node_writer(node, op, "unbatched", writes + 2 * BATCH)
        do_batch(writes + BATCH)
        profiler.enable()
        for start in range(0, writes, BATCH):
            do_batch(start)
        profiler.disable()
    finally:
        asyncio.run(node.stop())
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    return {"us_per_write": per_write, "writes": writes, "cprofile_tottime": text.getvalue()}


COMMIT_VARIANTS = (
    "autocommit INSERT (the raw ceiling)",
    "BEGIN IMMEDIATE; executemany INSERT; COMMIT",
    "BEGIN IMMEDIATE; execute INSERT; COMMIT",
    "autocommit INSERT, locking_mode=EXCLUSIVE",
    "BEGIN IMMEDIATE; executemany INSERT; COMMIT, EXCLUSIVE",
    "autocommit INSERT, EXCLUSIVE, the store's page size",
)


def run_commit_variants(
    workdir: str, mode: str, blob_bytes: int, commits: int, rotate: int
) -> dict[str, float]:
    """µs per commit of one blob on a raw connection in ``mode``, each variant once."""
    blob = os.urandom(blob_bytes)
    insert = "INSERT INTO log (delta) VALUES (?)"

    def autocommit(db: sqlite3.Connection) -> None:
        db.execute(insert, (blob,))

    def begin_executemany_commit(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, ((b,) for b in (blob,)))
        db.execute("COMMIT")

    def begin_execute_commit(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute(insert, (blob,))
        db.execute("COMMIT")

    from agentsync.store.sqlite import PAGE_SIZE

    store_pragmas = ("locking_mode=EXCLUSIVE", f"page_size={PAGE_SIZE}")
    variants: dict[str, tuple[Callable[[sqlite3.Connection], None], tuple[str, ...]]] = dict(
        zip(
            COMMIT_VARIANTS,
            [
                (autocommit, ()),
                (begin_executemany_commit, ()),
                (begin_execute_commit, ()),
                (autocommit, ("locking_mode=EXCLUSIVE",)),
                (begin_executemany_commit, ("locking_mode=EXCLUSIVE",)),
                (autocommit, store_pragmas),
            ],
            strict=True,
        )
    )
    labels = list(COMMIT_VARIANTS)
    k = rotate % len(labels)
    results: dict[str, float] = {}
    for i, label in enumerate(labels[k:] + labels[:k]):
        commit, pragmas = variants[label]
        db = _raw_connect(os.path.join(workdir, f"variant{i}.db"), mode, pragmas)
        try:
            for _ in range(WARMUP_WRITES):
                commit(db)
            gc.collect()
            began = time.perf_counter_ns()
            for _ in range(commits):
                commit(db)
            results[label] = (time.perf_counter_ns() - began) / commits / 1000
        finally:
            db.close()
    return results


# ---------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------


def _child(conn: Connection, fn: Callable[[str], Any], parent_dir: str) -> None:
    try:
        with tempfile.TemporaryDirectory(prefix="agentsync-durability-", dir=parent_dir) as work:
            result = fn(work)
        conn.send((True, result))
    except BaseException:  # report anything, a KeyboardInterrupt included
        conn.send((False, traceback.format_exc()))
    finally:
        conn.close()


def in_child(fn: Callable[[str], Any], parent_dir: str) -> tuple[bool, Any]:
    """Run ``fn(fresh temporary directory)`` in a forked child: (ok, result or traceback)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, parent_dir))
    proc.start()
    send.close()
    try:
        if not receive.poll(CHILD_TIMEOUT_S):
            proc.kill()
            return False, f"timed out after {CHILD_TIMEOUT_S:.0f} s"
        ok, result = receive.recv()
    except EOFError:
        ok, result = False, "the child died without an answer"
    finally:
        proc.join(timeout=30)
        receive.close()
    if ok and proc.exitcode not in (0, None):
        return False, f"the child exited with {proc.exitcode}"
    return ok, result


def measure(case: Case, clock: Clock, parent_dir: str, blob_bytes: dict[str, int]) -> Any:
    if case.kind == "raw":
        size = blob_bytes[f"{case.op}/{case.mode}"]
        return in_child(lambda work: run_raw(case, clock, work, size), parent_dir)
    return in_child(lambda work: run_node(case, clock, work), parent_dir)


# ---------------------------------------------------------------------------
# Where the temporary directories go
# ---------------------------------------------------------------------------


def fs_type(path: str) -> str | None:
    """The filesystem type of ``path`` (as ``df -T`` names it), or None if df cannot tell."""
    try:
        done = subprocess.run(
            ["df", "--output=fstype", path],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.split()
    return lines[-1] if len(lines) >= 2 else None


def choose_dir(asked: str | None) -> str:
    """The directory the temporary directories go in: asked, or on the repo's filesystem."""
    if asked:
        os.makedirs(asked, exist_ok=True)
        return os.path.abspath(asked)
    tmp = tempfile.gettempdir()
    if os.stat(tmp).st_dev == os.stat(ROOT).st_dev:
        return tmp
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    return str(results)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "rounds": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


def _k(value: float | None) -> str:
    """A rate in writes/s, short: 4.21k, 62.3k, 281k."""
    if value is None:
        return "-"
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1000:.2f}k"


def _rate(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    return f"{_k(s['median'])} ({_k(s['min'])}-{_k(s['max'])})"


def _ratio(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def build_rows(
    per_round: dict[str, list[dict[str, float] | None]], rounds: int
) -> list[dict[str, Any]]:
    """One row per (op, mode, batching): ours, raw, memory, the paired ratios and the bar."""

    def rates(name: str) -> list[float | None]:
        return [r["per_s"] if r else None for r in per_round.get(name, [None] * rounds)]

    rows = []
    for op in OPS:
        for batching in batchings(op):
            memory = rates(Case("memory", op, "-", batching).name)
            for mode in MODES:
                ours = rates(Case("ours", op, mode, batching).name)
                raw = rates(Case("raw", RAW_OF.get(op, op), mode, batching).name)
                ratios = [o / r for o, r in zip(ours, raw, strict=True) if o and r]
                serial = [1 / (1 / m + 1 / r) for m, r in zip(memory, raw, strict=True) if m and r]
                serial_ratio = [
                    1 / (1 / m + 1 / r) / r for m, r in zip(memory, raw, strict=True) if m and r
                ]
                ratio = summary(ratios)
                ok = None if ratio["median"] is None else ratio["median"] >= BAR_RATIO
                status = "n/a" if ok is None else ("PASS" if ok else "MISS")
                bytes_ = [
                    r["delta_bytes"]
                    for r in per_round.get(Case("ours", op, mode, batching).name, [])
                    if r and "delta_bytes" in r
                ]
                rows.append(
                    {
                        "op": op,
                        "mode": mode,
                        "batching": batching,
                        "ours_per_s": summary([x for x in ours if x]),
                        "raw_per_s": summary([x for x in raw if x]),
                        "memory_per_s": summary([x for x in memory if x]),
                        "ratio_ours_raw": ratio,
                        "serial_bound_per_s": summary(serial),
                        "serial_bound_ratio": summary(serial_ratio),
                        "delta_bytes_median": statistics.median(bytes_) if bytes_ else None,
                        "bar": BAR_RATIO,
                        "status": status if op in BAR_OPS else f"({status.lower()})",
                    }
                )
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    header = ["op", "mode", "writes", "ours /s", "raw SQLite /s", "ours/raw", "bar 0.70",
              "in-memory /s", "serial/raw"]  # fmt: skip
    lines = [header]
    lines.extend(
        [
            {"set_add": "set add", "counter_increment": "counter incr"}.get(
                row["op"], "set update"
            ),
            row["mode"].upper(),
            "1 per commit" if row["batching"] == "unbatched" else f"{BATCH} per commit",
            _rate(row["ours_per_s"]),
            _rate(row["raw_per_s"]),
            _ratio(row["ratio_ours_raw"]),
            row["status"],
            _rate(row["memory_per_s"]),
            "-"
            if row["serial_bound_ratio"]["median"] is None
            else f"{row['serial_bound_ratio']['median']:.2f}",
        ]
        for row in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        left = [cell.ljust(w) for cell, w in zip(line[:3], widths[:3], strict=True)]
        right = [cell.rjust(w) for cell, w in zip(line[3:], widths[3:], strict=True)]
        return "  ".join(left + right)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


def render_profile(op: str, prof: dict[str, Any], rate_us: float | None) -> str:
    us = prof["us_per_write"]
    out = [f"profile, one unbatched NORMAL write ({OP_LABELS[op]}), µs per write, "
           f"{prof['writes']:,} writes:"]  # fmt: skip
    order = [  # means over every timed write, as the totals
        "CRDT update (_update)",
        "encode the delta",
        "Store.log (the SQLite transaction)",
        "Store._insert (the SQLite transaction)",
        "sql begin immediate",
        "sql insert into",
        "sql commit",
        "engine.record_local",
    ]
    for key in order:
        if key in us:
            indent = "      " if key.startswith("sql ") else "  "
            out.append(f"{indent}{key:<38} {us[key]:6.2f}")
    parts = sum(us.get(k, 0.0) for k in order if not k.startswith("sql "))
    total = us["total (with the timers)"]
    out.append(f"  {'rest (handle, locks, timers)':<38} {total - parts:6.2f}")
    out.append(f"  {'total (with the timers)':<38} {total:6.2f}")
    bare = us["total (no timers, the chunks between)"]
    out.append(f"  {'total without timers, same child':<38} {bare:6.2f}")
    if rate_us is not None:
        out.append(f"  {'total in the rounds (median rate)':<38} {rate_us:6.2f}")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Durable writes per second: a Node with data_dir against raw SQLite."
    )
    parser.add_argument("--json", metavar="PATH", help="write every round and the medians here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 rounds of ~0.1 s measurements"
    )
    parser.add_argument("--rounds", type=positive, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"about how long each measurement lasts (default {DEFAULT_SECONDS})",
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="where the temporary directories go (default: the system temp directory if it "
        "is on the repository's filesystem, else bench/results)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the profile")
    return parser.parse_args(argv)


def _rotated(items: list[Case], r: int) -> Iterator[Case]:
    k = r % len(items)
    return iter(items[k:] + items[:k])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    rounds = args.rounds or (2 if args.quick else DEFAULT_ROUNDS)
    seconds = args.seconds or (0.1 if args.quick else DEFAULT_SECONDS)
    if not seconds > 0:
        raise SystemExit("--seconds must be > 0")

    def log(text: str) -> None:
        print(text, flush=True)

    import agentsync

    source = str(Path(agentsync.__file__).resolve().parent)
    outside = not source.startswith(str(ROOT) + os.sep)
    parent_dir = choose_dir(args.dir)
    fstype = fs_type(parent_dir)
    repo_fstype = fs_type(str(ROOT))
    if fstype == "tmpfs":
        raise SystemExit(f"{parent_dir} is a tmpfs: fsync is free there; give --dir on a disk")
    log(
        f"agentsync {version('agentsync')}, SQLite {sqlite3.sqlite_version}, Python "
        f"{platform.python_version()}; temporary directories in {parent_dir} ({fstype}; "
        f"the repository: {repo_fstype}); {rounds} rounds of ~{seconds:g} s measurements"
    )
    if outside:
        log(f"measuring the agentsync in {source}: the git commit reported is the repo's")
    if fstype != repo_fstype:
        log(f"note: {parent_dir} is not on the repository's filesystem type ({repo_fstype})")

    cases = all_cases()
    errors: dict[str, str] = {}

    # Calibration: each case for ~`seconds`; fixes its count, and the blobs' size for raw.
    counts: dict[str, int] = {}
    blob_bytes: dict[str, int] = {}
    calibrating = Clock(None, seconds)
    for case in sorted(cases, key=lambda c: c.kind == "raw"):  # raw last: it needs ours' sizes
        if case.kind == "raw" and Case("ours", case.op, case.mode, "unbatched").name in errors:
            errors[case.name] = "ours failed in calibration: no blob size"
            continue
        ok, result = measure(case, calibrating, parent_dir, blob_bytes)
        if not ok:
            errors[case.name] = result
            log(f"ERROR in {case.name} (calibration):\n{result}")
            continue
        counts[case.name] = max(BATCH, round(result["per_s"] * seconds / BATCH) * BATCH)
        if case.kind == "ours" and case.batching == "unbatched":
            blob_bytes[f"{case.op}/{case.mode}"] = round(result["delta_bytes"])
    log(f"calibrated in {time.perf_counter() - began:.1f} s: " + ", ".join(
        f"{name} {n:,}" for name, n in counts.items()))  # fmt: skip
    log("median delta bytes one unbatched write logs: " + ", ".join(
        f"{key} {n}" for key, n in blob_bytes.items()))  # fmt: skip

    per_round: dict[str, list[dict[str, float] | None]] = {c.name: [] for c in cases}
    for r in range(rounds):
        started = time.perf_counter()
        for case in _rotated(cases, r):
            if case.name in errors:
                per_round[case.name].append(None)
                continue
            ok, result = measure(case, Clock(counts[case.name], None), parent_dir, blob_bytes)
            if not ok:
                errors[case.name] = result
                per_round[case.name].append(None)
                log(f"ERROR in {case.name} (round {r + 1}):\n{result}")
                continue
            per_round[case.name].append(result)
        log(f"round {r + 1}/{rounds} done in {time.perf_counter() - started:.1f} s")

    rows = build_rows(per_round, rounds)
    log("")
    log(
        f"Durable writes per second: median (min-max) of {rounds} rounds, interleaved, "
        "each measurement in its own forked child and a fresh directory. ours/raw is "
        "paired within each round. serial/raw = 1/(1/in-memory + 1/raw) over raw: what "
        "ours/raw would be if a write cost its in-memory time plus one raw commit."
    )
    log(render_table(rows))
    log("")
    for row in rows:
        kind = "bar " if row["op"] in BAR_OPS else "info"  # not one of the figures
        log(
            f"{row['status']:<6}  {kind}  {row['op']} {row['mode']} {row['batching']}: ours/raw "
            f"{_ratio(row['ratio_ours_raw'])} >= {BAR_RATIO:.2f}"
        )

    profiles: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {}
    if not args.no_profile:
        writes = 2_000 if args.quick else PROFILE_WRITES
        log("")
        for op in BAR_OPS:
            ok, result = in_child(lambda work, op=op: run_profile(op, work, writes), parent_dir)
            if not ok:
                errors[f"profile/{op}"] = result
                log(f"ERROR in the profile of {op}:\n{result}")
                continue
            profiles[op] = result
            row = next(
                r for r in rows
                if r["op"] == op and r["mode"] == "normal" and r["batching"] == "unbatched"
            )  # fmt: skip
            median = row["ours_per_s"]["median"]
            log(render_profile(op, result, 1e6 / median if median else None))
            log("cProfile, top functions by own time:\n" + result["cprofile_tottime"].strip())
            log("")
        for mode in MODES:
            size = blob_bytes.get(f"set_add/{mode}", 64)
            # each variant for about a third of a measurement, in 3 passes, rotated
            commits = max(BATCH, counts.get(f"raw/set_add/{mode}/unbatched", 1_000) // 3)
            passes: list[dict[str, float]] = []
            for p in range(3):
                ok, result = in_child(
                    partial(
                        run_commit_variants, mode=mode, blob_bytes=size, commits=commits, rotate=p
                    ),
                    parent_dir,
                )
                if not ok:
                    errors[f"commit_variants/{mode}"] = result
                    log(f"ERROR in the commit variants ({mode}):\n{result}")
                    break
                passes.append(result)
            if not passes:
                continue
            variants[mode] = {
                label: summary([run[label] for run in passes]) for label in COMMIT_VARIANTS
            }
            log(
                f"commit variants, raw {mode.upper()}, one {size}-byte blob, "
                f"{commits:,} commits x {len(passes)} passes, µs per commit, median (min-max):"
            )
            for label, us in variants[mode].items():
                log(f"  {label:<60} {us['median']:7.2f} ({us['min']:.2f}-{us['max']:.2f})")

    wall = time.perf_counter() - began
    log(f"\ntotal {wall:.1f} s" + (f"; {len(errors)} measurement(s) failed" if errors else ""))

    if args.json:
        report = {
            **report_header(argv),
            "config": {
                "rounds": rounds,
                "seconds_per_measurement": seconds,
                "quick": args.quick,
                "batch": BATCH,
                "warmup_writes": WARMUP_WRITES,
                "bar_ratio": BAR_RATIO,
                "ops": OP_LABELS,
                "counts": counts,
                "blob_bytes": blob_bytes,
                "dir": parent_dir,
                "dir_fstype": fstype,
                "repo_fstype": repo_fstype,
                "node": "Node('bench', data_dir=...), not started, no peers",
                "raw": "sqlite3, isolation_level=None, WAL, table log(seq INTEGER PRIMARY KEY, "
                "delta BLOB); unbatched: autocommit INSERT; batch100: BEGIN, executemany, COMMIT",
                "gc_enabled": gc.isenabled(),
                "start_method": "fork",
                "timer": "time.perf_counter",
            },
            **environment(
                {"build": sys.version},
                loadavg_at_end=loadavg(),
                disk_free_bytes=shutil.disk_usage(parent_dir).free,
            ),
            "sqlite": sqlite3.sqlite_version,
            "git": git_info(),
            "agentsync_source": source,
            "agentsync_outside_repo": outside,
            "cases": {
                case.name: {**asdict(case), "rounds": per_round[case.name]} for case in cases
            },
            "rows": rows,
            "profiles": profiles,
            "commit_variants_us": variants,
            "errors": errors,
            "wall_seconds": wall,
        }
        log(f"wrote {write_json(args.json, report)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
