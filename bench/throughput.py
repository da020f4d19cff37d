#!/usr/bin/env python3
"""Sustained local writes per second while gossiping with 4 peers, against no peers.

Run ``python bench/throughput.py [--json PATH] [--quick] [--trials T]
[--seconds S] [--interval S] [--peers P]``.

How it measures:

* Two Nodes in this process, started once and kept for the whole run:
  **gossiping** knows ``--peers`` peers (4), which are real ``agentsync serve``
  processes on loopback that know it and each other, so it both starts
  exchanges and answers them; **alone** has no peers.
* A trial writes to one of them for ``--seconds``, as fast as one coroutine
  can: a mix of counter increments, map sets over 1,000 keys and set
  add/discard over 100 elements, in chunks of 256 writes with an
  ``await asyncio.sleep(0)`` after each chunk, so the node's gossip, its
  eager pushes and its server all run between chunks, as in an agent.
* Trials are interleaved: alone, gossiping, gossiping, alone, ... (the order
  flips every trial), so drifting machine load hits both alike. The figure
  is the median of the trials; the JSON holds every trial.
* After each gossiping trial the run waits until every peer holds the
  writer's counter (read from ``GET /v1/state``): a check that the writes
  really spread, and how far behind the peers were when the writes stopped.
* While one node writes, the other idles: alone costs nothing, and the
  gossiping node's idle exchanges (a few small bodies per round) weigh on
  the alone trials, which only lowers the ratio's denominator by about 1%.

* **offline** (issue 5's offline-first item) knows ``--peers`` peers that
  never answer: half refuse the connection (nothing listens), half accept it
  and stay silent until the exchange times out, as on a network that is down.
  Its writes per second, against alone, show whether a node with no
  reachable peer still writes at full speed.

The bar: gossiping keeps >= 50% of the writes per second of alone. The
peers share this machine's cores with the writer. The script exits 0 unless
the run failed (a peer did not start, or the writes did not spread).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import ROOT, environment, git_info, loadavg, positive, report_header, write_json

from agentsync.node import Node

DEFAULT_TRIALS = 7
QUICK_TRIALS = 2
DEFAULT_SECONDS = 3.0
QUICK_SECONDS = 0.5
DEFAULT_INTERVAL_S = 0.2
DEFAULT_PEERS = 4
CHUNK = 256
MAP_KEYS = 1000
SET_ELEMENTS = 100
BAR_RATIO = 0.5
START_TIMEOUT_S = 20.0
SPREAD_TIMEOUT_S = 300.0
URL_LINE = re.compile(r"serving (http://\S+)")
MODES = ("alone", "gossiping", "offline")


@dataclass
class Trial:
    mode: str
    writes: int
    seconds: float
    writes_per_s: float
    cpu_share: float
    """This process's CPU seconds per wall second: below 1 when the peers took the core."""
    bytes_sent: int = 0
    bytes_received: int = 0
    exchanges: int = 0
    full_state_fallbacks: int = 0
    spread_s: float | None = None
    """Seconds from the last write until every peer held the writer's counter."""


class Peers:
    """``agentsync serve`` processes on loopback, each knowing the writer and the earlier ones."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.urls: list[str] = []

    def start(
        self, count: int, writer_url: str, interval: float, cpus: set[int] | None, logs: Path
    ) -> None:
        for i in range(count):
            known = [writer_url, *self.urls]
            argv = [sys.executable, "-m", "agentsync.cli", "serve", "--id", f"peer{i}"]
            argv += ["--gossip-interval", str(interval)]
            for url in known:
                argv += ["--peer", url]
            log = logs / f"peer{i}.log"
            with log.open("w") as stderr:
                proc = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT
                )
            self.procs.append(proc)
            if cpus is not None:
                os.sched_setaffinity(proc.pid, cpus)
            try:
                self.urls.append(_read_url(proc, START_TIMEOUT_S))
            except RuntimeError as exc:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{exc}; its stderr ends: {' | '.join(tail)}") from None

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _read_url(proc: subprocess.Popen[str], timeout: float) -> str:
    """The URL a ``serve`` process prints on its first line, within ``timeout``."""
    assert proc.stdout is not None
    result: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    line = result[0] if result else ""
    match = URL_LINE.search(line)
    if match is None:
        raise RuntimeError(f"a peer did not start within {timeout:g} s (first line {line!r})")
    return match.group(1)


class Workload:
    """The write mix, identical for both nodes; counts the counter's total."""

    def __init__(self, node: Node) -> None:
        self.counter = node.counter("ops")
        self.map = node.lwwmap("table")
        self.set = node.set("tags")
        self.total = 0
        self._i = 0

    def chunk(self) -> None:
        """CHUNK writes: a third increments, a third map sets, a third set adds/discards."""
        counter, table, tags = self.counter, self.map, self.set
        i = self._i
        for j in range(i, i + CHUNK, 3):
            counter.increment()
            table[f"k{j % MAP_KEYS}"] = j
            element = f"e{j % SET_ELEMENTS}"
            if (j // SET_ELEMENTS) % 2:
                tags.discard(element)
            else:
                tags.add(element)
        self.total += len(range(i, i + CHUNK, 3))
        self._i = i + CHUNK


async def _write_for(workload: Workload, seconds: float) -> tuple[int, float, float]:
    """Write for ``seconds``; (writes, elapsed seconds, this process's CPU seconds)."""
    chunk = workload.chunk
    writes = 0
    per_chunk = 3 * len(range(0, CHUNK, 3))
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        chunk()
        writes += per_chunk
        await asyncio.sleep(0)  # the node's gossip and server run here
        now = time.perf_counter()
        if now >= deadline:
            return writes, now - start, time.process_time() - cpu


async def _spread(peer_urls: list[str], total: int, timeout: float) -> float:
    """Seconds until every peer's counter reads ``total``."""
    start = time.perf_counter()
    pending = set(peer_urls)
    # A peer still working through the writer's backlog answers late: one
    # read may take as long as the whole wait.
    probe = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=probe) as session:
        while pending:
            for url in sorted(pending):
                async with session.get(url + "/v1/state") as response:
                    state = await response.json()
                names = state.get("names", {})
                if names.get("ops", {}).get("value") == total:
                    pending.discard(url)
            if pending:
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"peers {sorted(pending)} lack the writes after {timeout} s")
                await asyncio.sleep(0.02)
    return time.perf_counter() - start


async def run_trials(
    trials: int,
    seconds: float,
    *,
    interval: float,
    peers: int,
    pin: tuple[set[int], set[int]] | None,
    log: Callable[[str], None],
) -> list[Trial]:
    gossiping = Node("writer", gossip_interval=interval)
    alone = Node("alone", gossip_interval=interval)
    silent = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
    unreachable = [_refusing_url() if i % 2 else _url_of(silent) for i in range(peers)]
    offline = Node("offline", gossip_interval=interval, peers=unreachable)
    procs = Peers()
    results: list[Trial] = []
    if pin is not None:
        os.sched_setaffinity(0, pin[0])
    await gossiping.start()
    try:
        await alone.start()
        await offline.start()
        with tempfile.TemporaryDirectory(prefix="agentsync-bench-") as logs:
            procs.start(peers, gossiping.url, interval, pin[1] if pin else None, Path(logs))
        for url in procs.urls:
            gossiping.add_peer(url)
        log(f"{peers} peers up: {' '.join(procs.urls)}")
        nodes = {"alone": alone, "gossiping": gossiping, "offline": offline}
        workloads = {mode: Workload(node) for mode, node in nodes.items()}
        # Warm-up: both write once briefly, and the peers catch up with the writer.
        for workload in workloads.values():
            await _write_for(workload, min(seconds, 0.2))
        await _spread(procs.urls, workloads["gossiping"].total, SPREAD_TIMEOUT_S)
        for t in range(trials):
            order = MODES[t % 3 :] + MODES[: t % 3]  # each mode takes each place in turn
            for mode in order:
                node = nodes[mode]
                before = asdict(node.metrics)
                writes, elapsed, cpu = await _write_for(workloads[mode], seconds)
                after = asdict(node.metrics)
                trial = Trial(
                    mode,
                    writes,
                    elapsed,
                    writes / elapsed,
                    cpu_share=cpu / elapsed,
                    bytes_sent=after["bytes_sent"] - before["bytes_sent"],
                    bytes_received=after["bytes_received"] - before["bytes_received"],
                    exchanges=after["rounds"] - before["rounds"],
                    full_state_fallbacks=after["full_state_fallbacks"]
                    - before["full_state_fallbacks"],
                )
                if mode == "gossiping":
                    total = workloads[mode].total
                    trial.spread_s = await _spread(procs.urls, total, SPREAD_TIMEOUT_S)
                results.append(trial)
                spread = (
                    "" if trial.spread_s is None else f", peers caught up in {trial.spread_s:.2f} s"
                )
                log(
                    f"trial {t + 1} {mode:<9}: {trial.writes_per_s:>9,.0f} writes/s "
                    f"(cpu {trial.cpu_share:.2f}, {trial.exchanges} exchanges, "
                    f"{trial.bytes_sent:,} bytes sent{spread})"
                )
    finally:
        procs.stop()
        await offline.stop()
        await alone.stop()
        await gossiping.stop()
        silent.close()
    return results


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A peer that takes the connection and never answers (the exchange times out)."""
    with contextlib.suppress(ConnectionError):
        await reader.read()  # until the client gives up and closes
    writer.close()


def _url_of(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _refusing_url() -> str:
    """A loopback URL where nothing listens (a port just bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def summarize(results: list[Trial]) -> dict[str, Any]:
    medians = {
        mode: statistics.median(t.writes_per_s for t in results if t.mode == mode) for mode in MODES
    }
    ratio = medians["gossiping"] / medians["alone"]
    per_cpu = {
        mode: statistics.median(
            t.writes_per_s / t.cpu_share for t in results if t.mode == mode and t.cpu_share
        )
        for mode in ("alone", "gossiping")
    }
    spread = [t.spread_s for t in results if t.spread_s is not None]
    return {
        "alone_writes_per_s": medians["alone"],
        "gossiping_writes_per_s": medians["gossiping"],
        "ratio": ratio,
        "offline_writes_per_s": medians["offline"],
        "offline_ratio": medians["offline"] / medians["alone"],
        "bar_ratio": BAR_RATIO,
        "status": "PASS" if ratio >= BAR_RATIO else "MISS",
        "spread_s_median": statistics.median(spread) if spread else None,
        "alone_writes_per_cpu_s": per_cpu["alone"],
        "gossiping_writes_per_cpu_s": per_cpu["gossiping"],
        "cpu_ratio": per_cpu["gossiping"] / per_cpu["alone"],
        "cpu_share_median": {
            mode: statistics.median(t.cpu_share for t in results if t.mode == mode)
            for mode in MODES
        },
    }


def _pinning() -> tuple[set[int], set[int]] | None:
    """(writer CPUs, peer CPUs): one CPU for the writer, the rest for the peers."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Writes per second while gossiping with peers, against no peers."
    )
    parser.add_argument("--json", metavar="PATH", help="write the summary and every trial here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_TRIALS} trials of {QUICK_SECONDS} s per mode",
    )
    parser.add_argument("--trials", type=positive, help=f"trials per mode ({DEFAULT_TRIALS})")
    parser.add_argument("--seconds", type=float, help=f"seconds per trial ({DEFAULT_SECONDS})")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help="gossip interval, s (0.2)"
    )
    parser.add_argument("--peers", type=positive, default=DEFAULT_PEERS, help="peers (4)")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the writer and the peers to different CPUs",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trials = args.trials or (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(text, flush=True)

    log(
        f"throughput: {trials} trials x {seconds:g} s per mode, {args.peers} peers, "
        f"interval {args.interval:g} s, chunks of {CHUNK} writes"
    )
    pin = None if args.no_pin else _pinning()
    if pin is not None:
        log(f"writer pinned to CPU {sorted(pin[0])}, peers to CPU {sorted(pin[1])}")
    results = asyncio.run(
        run_trials(trials, seconds, interval=args.interval, peers=args.peers, pin=pin, log=log)
    )
    summary = summarize(results)
    log("")
    share = summary["cpu_share_median"]
    for mode in ("alone", "gossiping"):
        log(
            f"{mode:<10} {summary[mode + '_writes_per_s']:>10,.0f} writes/s (median), "
            f"writer on CPU {share[mode]:.0%} of the time, "
            f"{summary[mode + '_writes_per_cpu_s']:>10,.0f} writes per CPU second"
        )
    log(
        f"offline    {summary['offline_writes_per_s']:>10,.0f} writes/s (median), "
        f"{summary['offline_ratio']:.2f} of alone, with {args.peers} peers that never answer"
    )
    log(
        f"{summary['status']:<4}  bar   gossiping/alone = {summary['ratio']:.2f} "
        f"(>= {BAR_RATIO:.2f}); peers caught up {summary['spread_s_median']:.2f} s "
        "after the last write (median)"
    )
    log(
        f"      per CPU second of the writer: gossiping/alone = {summary['cpu_ratio']:.2f} "
        "(the protocol's own cost, apart from CPU taken by other processes)"
    )
    wall = time.perf_counter() - began
    log(f"\ntotal {wall:.1f} s")
    if args.json:
        report = {
            **report_header(argv),
            "config": {
                "trials": trials,
                "seconds": seconds,
                "interval_s": args.interval,
                "peers": args.peers,
                "chunk": CHUNK,
                "map_keys": MAP_KEYS,
                "set_elements": SET_ELEMENTS,
                "quick": args.quick,
                "pinned": None
                if pin is None
                else {"writer": sorted(pin[0]), "peers": sorted(pin[1])},
            },
            **environment(loadavg=loadavg()),
            "git": git_info(),
            "summary": summary,
            "trials": [asdict(t) for t in results],
            "wall_seconds": wall,
        }
        log(f"wrote {write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
