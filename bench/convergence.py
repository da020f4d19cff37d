#!/usr/bin/env python3
"""Gossip rounds and bytes from the last write until every replica is equal.

Run ``python bench/convergence.py [--json PATH] [--quick] [--sizes 8,16,32]
[--trials T] [--interval S] [--fanout F] [--seed S]``.

How it measures:

* N real Nodes serve HTTP on 127.0.0.1 in this one process, each gossiping
  every ``--interval`` seconds with ``--fanout`` random peers out of all the
  others (full membership, as serf's model assumes).
* Warm-up: one write at every node, until all are equal, so every pair of
  peers has exchanged acks before the first trial.
* A trial is a burst of writes at random nodes (counter increments, set adds
  and map entries, seeded), done back to back with no await between them,
  then the clock runs from the last write until every replica holds the
  expected board. Each node reports its changes through ``subscribe``, so
  the moment it converges is taken when it happens, not by polling.
* **Rounds** are gossip intervals on the wall clock: elapsed / interval (how
  serf and the reference figures count them). **Bytes** are the sync bodies
  all nodes sent in that window (``metrics.bytes_sent``), and **exchanges**
  the push-pull exchanges completed (each counts once, at its initiator).
* One cluster runs at a time (their idle gossip would load the shared loop),
  its trials back to back, each after a random pause of 1-2 intervals so that
  the bursts fall at every phase of the nodes' gossip timers.
* Every node shares one event loop, so a slow loop would show up as extra
  rounds: the loop's lag (how late a 10 ms timer fires) is reported too.

The goal, at fanout 3, is p99 rounds <= ceil(log2 N + ln N) + 2 (9 at N=16,
from shared/reference/gossip-and-membership.md). The script exits 0 unless a
trial failed to converge within its timeout; the goal check is informational.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchlib import environment, git_info, loadavg, positive, report_header, write_json

from agentsync.node import Node

DEFAULT_SIZES = (8, 16, 32)
QUICK_SIZES = (8, 16)
DEFAULT_TRIALS = 15
QUICK_TRIALS = 3
DEFAULT_INTERVAL_S = 0.2
QUICK_INTERVAL_S = 0.1
BURST_WRITES = 12
TRIAL_TIMEOUT_ROUNDS = 100
IDLE_SETTLE_MAX_ROUNDS = 30
IDLE_STABLE_ROUNDS = 3
"""The idle cost is measured once the delta buffers' bytes held still this many rounds."""
IDLE_ROUNDS = 5
"""Rounds of idle gossip measured after the trials of a size."""
BUFFER_GAUGE = re.compile(r"^agentsync_delta_buffer_bytes (\d+)$", re.MULTILINE)


def goal_rounds(n: int) -> int:
    """The p99 goal at fanout 3: ceil(log2 N + ln N) + 2."""
    return math.ceil(math.log2(n) + math.log(n)) + 2


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Trial:
    rounds: float
    """Wall-clock seconds from the last write until all are equal, over the interval."""
    seconds: float
    bytes: int
    exchanges: int
    fallbacks: int
    n: int
    fanout: int

    @property
    def exchange_rounds(self) -> float:
        """The exchanges it took, in rounds' worth (N x fanout exchanges a round)."""
        return self.exchanges / (self.n * self.fanout)


@dataclass
class Cluster:
    """N started nodes that all know each other, and the board they should hold."""

    nodes: list[Node]
    interval: float
    fanout: int
    expected: dict[str, Any] = field(default_factory=dict)
    counter: int = 0
    items: set[str] = field(default_factory=set)
    notes: dict[str, int] = field(default_factory=dict)
    writes: int = 0

    @classmethod
    async def start(cls, n: int, interval: float, fanout: int) -> Cluster:
        nodes = [Node(f"n{i:02d}", gossip_interval=interval, fanout=fanout) for i in range(n)]
        started: list[Node] = []
        try:
            for node in nodes:
                await node.start()
                started.append(node)
        except BaseException:
            for node in started:
                await node.stop()
            raise
        for node in nodes:
            for other in nodes:
                if other is not node:
                    node.add_peer(other.url)
        return cls(nodes, interval, fanout)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()

    def write(self, node: Node, rng: random.Random) -> None:
        """One seeded write at ``node``, mirrored in the expected board."""
        self.writes += 1
        kind = rng.randrange(3)
        if kind == 0:
            step = rng.randint(1, 5)
            node.counter("count").increment(step)
            self.counter += step
        elif kind == 1:
            item = f"item{self.writes}"
            node.set("items").add(item)
            self.items.add(item)
        else:
            key = f"note{self.writes}"  # distinct keys: the last writer is known
            node.lwwmap("notes")[key] = self.writes
            self.notes[key] = self.writes
        board: dict[str, Any] = {}
        if self.counter:
            board["count"] = self.counter
        if self.items:
            board["items"] = frozenset(self.items)
        if self.notes:
            board["notes"] = dict(self.notes)
        self.expected = board

    def totals(self) -> tuple[int, int, int]:
        """(bytes sent, exchanges, full-state fallbacks) summed over the nodes."""
        sent = sum(node.metrics.bytes_sent for node in self.nodes)
        rounds = sum(node.metrics.rounds for node in self.nodes)
        fallbacks = sum(node.metrics.full_state_fallbacks for node in self.nodes)
        return sent, rounds // 2, fallbacks

    async def converge(self, writes: Callable[[], None], timeout: float) -> Trial:
        """Run ``writes`` and time from its end until every node holds ``expected``."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        pending: set[int] = set(range(len(self.nodes)))
        marks: dict[str, Any] = {}

        def watcher(index: int) -> Callable[[object], None]:
            def on_change(_: object) -> None:
                if index in pending and "start" in marks and _equal(self.nodes[index], self):
                    pending.discard(index)
                    if not pending and not done.done():
                        marks["end"] = time.perf_counter()
                        marks["end_totals"] = self.totals()
                        done.set_result(None)

            return on_change

        unsubscribes = [node.subscribe(watcher(i)) for i, node in enumerate(self.nodes)]
        try:
            writes()
            marks["start_totals"] = self.totals()
            marks["start"] = time.perf_counter()
            for i, node in enumerate(self.nodes):  # already equal (the writers themselves)
                if _equal(node, self):
                    pending.discard(i)
            if not pending:
                marks["end"], marks["end_totals"] = marks["start"], marks["start_totals"]
            else:
                await asyncio.wait_for(done, timeout)
        finally:
            for unsubscribe in unsubscribes:
                unsubscribe()
        seconds = marks["end"] - marks["start"]
        sent0, exch0, fb0 = marks["start_totals"]
        sent1, exch1, fb1 = marks["end_totals"]
        return Trial(
            seconds / self.interval,
            seconds,
            sent1 - sent0,
            exch1 - exch0,
            fb1 - fb0,
            len(self.nodes),
            self.fanout,
        )


def _equal(node: Node, cluster: Cluster) -> bool:
    return node.value == cluster.expected


class LoopLag:
    """How late a 10 ms timer fires on the shared loop: the harness's own overhead."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.samples.append(max(0.0, time.perf_counter() - before - 0.01))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        samples, self.samples = self.samples, []
        return samples


async def run_trials(
    sizes: Sequence[int],
    *,
    trials: int,
    interval: float,
    fanout: int,
    seed: int,
    log: Callable[[str], None],
) -> dict[int, dict[str, Any]]:
    """Every trial of every size; one cluster runs at a time, the sizes in turn."""
    rng = random.Random(seed)
    timeout = TRIAL_TIMEOUT_ROUNDS * interval
    summaries: dict[int, dict[str, Any]] = {}
    for n in sizes:
        results: list[Trial] = []
        lags: list[float] = []
        failures = 0
        cluster = await Cluster.start(n, interval, fanout)
        try:

            def warm(c: Cluster = cluster) -> None:
                for node in c.nodes:
                    c.write(node, rng)

            await cluster.converge(warm, timeout * 4)
            log(f"N={n}: {n} nodes up and in sync")
            for trial in range(trials):
                await asyncio.sleep(rng.uniform(1, 2) * interval)  # a random phase
                lag = LoopLag()
                lag.start()

                def burst(c: Cluster = cluster) -> None:
                    for _ in range(BURST_WRITES):
                        c.write(rng.choice(c.nodes), rng)

                try:
                    result = await cluster.converge(burst, timeout)
                except asyncio.TimeoutError:
                    failures += 1
                    await lag.stop()
                    log(f"N={n} trial {trial + 1}: NOT converged within {timeout:g} s")
                    await _settle(cluster, timeout * 4)
                    continue
                results.append(result)
                lags.extend(await lag.stop())
                log(
                    f"N={n} trial {trial + 1}: {result.rounds:.1f} rounds "
                    f"({result.seconds * 1000:.0f} ms), {result.bytes:,} bytes, "
                    f"{result.exchanges} exchanges ({result.exchange_rounds:.1f} rounds' worth)"
                )
            idle = await _idle_cost(cluster)
        finally:
            await cluster.stop()
        summaries[n] = _summary(
            n, trials=results, lags=lags, idle=idle, failures=failures, fanout=fanout
        )
    return summaries


async def _settle(cluster: Cluster, timeout: float) -> None:
    """After a failed trial: wait until the cluster is in sync again, or give up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_equal(node, cluster) for node in cluster.nodes):
            return
        await asyncio.sleep(cluster.interval)


def _buffered(node: Node) -> int:
    """The bytes in a node's delta buffer, from its Prometheus metrics."""
    match = BUFFER_GAUGE.search(node.metrics_text())
    return int(match.group(1)) if match else 0


async def _idle_cost(cluster: Cluster) -> dict[str, float]:
    """Body bytes per exchange and per node-round once the delta buffers stop shrinking."""
    deadline = time.perf_counter() + IDLE_SETTLE_MAX_ROUNDS * cluster.interval
    history = [sum(_buffered(node) for node in cluster.nodes)]
    while time.perf_counter() < deadline and not (
        len(history) > IDLE_STABLE_ROUNDS and len(set(history[-IDLE_STABLE_ROUNDS - 1 :])) == 1
    ):
        await asyncio.sleep(cluster.interval)
        history.append(sum(_buffered(node) for node in cluster.nodes))
    sent0, exch0, _ = cluster.totals()
    start = time.perf_counter()
    await asyncio.sleep(IDLE_ROUNDS * cluster.interval)
    elapsed = time.perf_counter() - start
    sent1, exch1, _ = cluster.totals()
    exchanges = exch1 - exch0
    node_rounds = len(cluster.nodes) * elapsed / cluster.interval
    return {
        "settle_rounds": len(history) - 1,
        "buffer_bytes_left": history[-1],
        "bytes_per_exchange": (sent1 - sent0) / exchanges if exchanges else math.nan,
        "exchanges_per_node_round": exchanges / node_rounds,
        "bytes_per_node_round": (sent1 - sent0) / node_rounds,
    }


def _summary(
    n: int,
    *,
    trials: list[Trial],
    lags: list[float],
    idle: dict[str, float],
    failures: int,
    fanout: int,
) -> dict[str, Any]:
    rounds = [t.rounds for t in trials]
    sizes = [float(t.bytes) for t in trials]
    goal = goal_rounds(n)
    p99 = percentile(rounds, 99)
    return {
        "n": n,
        "goal_p99_rounds": goal,
        "goal_applies": fanout == 3,
        "trials": len(trials),
        "failures": failures,
        "rounds": {
            "p50": percentile(rounds, 50),
            "p99": p99,
            "max": max(rounds, default=math.nan),
            "all": rounds,
        },
        "seconds_all": [t.seconds for t in trials],
        "seconds": {"p50": percentile([t.seconds for t in trials], 50)},
        "bytes": {
            "p50": percentile(sizes, 50),
            "p99": percentile(sizes, 99),
            "per_node_p50": percentile(sizes, 50) / n,
            "per_write_p50": percentile(sizes, 50) / BURST_WRITES,
            "all": [t.bytes for t in trials],
        },
        "exchanges": {"p50": percentile([float(t.exchanges) for t in trials], 50)},
        "exchange_rounds": {
            "p50": percentile([t.exchange_rounds for t in trials], 50),
            "p99": percentile([t.exchange_rounds for t in trials], 99),
        },
        "full_state_fallbacks": sum(t.fallbacks for t in trials),
        "loop_lag_ms": {
            "p50": percentile(lags, 50) * 1000,
            "p99": percentile(lags, 99) * 1000,
        },
        "idle": idle,
        "status": "MISS" if failures or not p99 <= goal else "PASS",
    }


def render(summaries: dict[int, dict[str, Any]], interval: float, fanout: int) -> str:
    head = (
        f"{'N':>4}  {'trials':>6}  {'p50 rnd':>7}  {'p99 rnd':>7}  {'goal':>4}  "
        f"{'p50 x-rnd':>9}  {'p50 bytes':>9}  {'p99 bytes':>9}  {'B/write':>7}  "
        f"{'idle B/exch':>11}  {'lag p99':>7}  status"
    )
    lines = [head]
    for n, s in summaries.items():
        idle = s["idle"].get("bytes_per_exchange", math.nan)
        lines.append(
            f"{n:>4}  {s['trials']:>6}  {s['rounds']['p50']:>7.1f}  {s['rounds']['p99']:>7.1f}  "
            f"{s['goal_p99_rounds']:>4}  {s['exchange_rounds']['p50']:>9.1f}  "
            f"{s['bytes']['p50']:>9,.0f}  {s['bytes']['p99']:>9,.0f}  "
            f"{s['bytes']['per_write_p50']:>7,.0f}  {idle:>11.1f}  "
            f"{s['loop_lag_ms']['p99']:>5.0f}ms  {s['status']}"
        )
    lines += [
        f"rnd = seconds from the last write until every replica is equal / {interval:g} s "
        f"interval; fanout {fanout}; goal p99 <= ceil(log2 N + ln N) + 2.",
        "x-rnd = the exchanges that took, over N x fanout (one round's worth): near rnd "
        "unless the shared loop lags (lag p99 near the interval means the harness saturates).",
        "B/write = all sync bodies sent per write; idle B/exch = request + response bodies of "
        "one exchange once the delta buffers stopped shrinking.",
    ]
    return "\n".join(lines)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("sizes must be integers >= 2")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--json", metavar="PATH", help="write the summary and every trial here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: N in {QUICK_SIZES}, {QUICK_TRIALS} trials, {QUICK_INTERVAL_S} s interval",
    )
    parser.add_argument("--sizes", type=_sizes, help="comma-separated cluster sizes (8,16,32)")
    parser.add_argument("--trials", type=positive, help=f"trials per size ({DEFAULT_TRIALS})")
    parser.add_argument("--interval", type=float, help=f"gossip interval, s ({DEFAULT_INTERVAL_S})")
    parser.add_argument("--fanout", type=positive, default=3, help="peers per round (3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the writes (1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    trials = args.trials or (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)
    interval = args.interval or (QUICK_INTERVAL_S if args.quick else DEFAULT_INTERVAL_S)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(text, flush=True)

    log(
        f"convergence: N in {list(sizes)}, {trials} trials each, interval {interval:g} s, "
        f"fanout {args.fanout}, {BURST_WRITES} writes per burst, seed {args.seed}"
    )
    summaries = asyncio.run(
        run_trials(
            sizes, trials=trials, interval=interval, fanout=args.fanout, seed=args.seed, log=log
        )
    )
    log("")
    log(render(summaries, interval, args.fanout))
    wall = time.perf_counter() - began
    failed = sum(s["failures"] for s in summaries.values())
    log(f"\ntotal {wall:.1f} s" + (f"; {failed} trial(s) did not converge" if failed else ""))
    if args.json:
        report = {
            **report_header(argv),
            "config": {
                "sizes": list(sizes),
                "trials": trials,
                "interval_s": interval,
                "fanout": args.fanout,
                "burst_writes": BURST_WRITES,
                "seed": args.seed,
                "quick": args.quick,
                "membership": "full (every node knows every other)",
                "round_clock": "wall-clock seconds / interval",
            },
            **environment(loadavg=loadavg()),
            "git": git_info(),
            "sizes": {str(n): s for n, s in summaries.items()},
            "wall_seconds": wall,
        }
        log(f"wrote {write_json(args.json, report)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
