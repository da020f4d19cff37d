#!/usr/bin/env python3
"""How fast hosts on one LAN find each other over mDNS, notice a cut-off host, and heal.

Run as root: ``python bench/discovery.py [--json PATH] [--hosts 3 8] [--runs N] [--logs DIR]``.

How it measures:

* Each run builds fresh hosts in Linux network namespaces on one bridge
  (``tests.netns.make_hosts``) and starts, on every host, ``agentsync serve
  --mdns`` with no peers or seeds, the default gossip interval (0.2 s) and
  the default membership timings, plus the stand-in agent through which the
  bench reads and writes that host's node (``tests.netns_nodes.HostNode``).
* **Start.** The clock starts as the first process is launched. *serving*
  is when the last node logged that it serves HTTP (Python start-up and
  binding, from the nodes' own log time stamps); *health* is when the last
  node first answered ``GET /v1/health`` through its agent (the agent is a
  Python process too, so this includes its start-up); *all alive* is when
  every node lists every other host as ``alive``. All alive minus serving is
  what discovery itself takes (mDNS probing, announcing and browsing).
* **Cut.** After a pause of ``SETTLE_S`` (so that the cut falls in steady
  gossip, not just after the nodes met), the last host's link is set down
  (``Hosts.cut``). *suspect* and *dead* are when every other node first
  reported it so. docs/membership.md bounds death at 4.48 s with these
  defaults, from the last successful exchange, which is at or before the cut.
* **Heal.** Every host then writes ``WRITES`` items into the set ``writes``
  on its side of the cut; once each side holds its own side's writes, the
  link is set up again (``Hosts.heal``). *alive* is when every node lists
  every other as ``alive`` again, *converged* when every node holds every
  write.
* Polling: every host's agent is asked at once (one thread per host), a
  sweep at most every ``POLL_MIN_S``. An agent's answer takes about 50 ms
  (its harness polls for the answer line at that pace), so a sweep does
  too: the median sweep is reported as the resolution. An answer counts at
  the midpoint of its request and its arrival (the first to a host: at its
  arrival, as it waited for the agent to start). Where a condition must
  hold on every node, its time is the latest of the times it became true on
  each node, in a sweep where it held on all; a node whose view flips back
  resets its time. Every wait has a deadline and a bounded number of sweeps.
* Runs interleave the host counts (3, 8, 3, 8, ...), each in new
  namespaces, so that the machine's noise falls on all alike. The figures
  are medians with min and max over the runs. The script exits 0 unless a
  run failed (a deadline passed), or 2 where namespaces cannot be made; the
  5 s detection check is informational.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from benchlib import ROOT, environment, git_info, loadavg, positive, report_header, write_json

if str(ROOT) not in sys.path:  # `import tests.netns` when run as `python bench/discovery.py`
    sys.path.insert(0, str(ROOT))

from agentsync.discovery import MembershipConfig
from agentsync.node import EXCHANGE_TIMEOUT_S

try:
    from tests.netns import Hosts, make_hosts, unavailable_reason
    from tests.netns_nodes import HostNode
except ModuleNotFoundError as exc:  # tests.netns imports pytest (pip install -e '.[dev]')
    sys.exit(f"bench/discovery.py needs {exc.name!r} for tests.netns: pip install -e '.[dev]'")

T = TypeVar("T")

DEFAULT_HOSTS = (3, 8)
DEFAULT_RUNS = 3
GOSSIP_INTERVAL_S = 0.2
"""The node's default; passed explicitly because HostNode passes one."""
ROUND_LATE = 1.2
"""A gossip round starts at most 20 % late (the node's jitter): 0.24 s at 0.2 s."""
DOCUMENTED_BOUND_S = 5.0
"""Issue 4 and docs/membership.md: a dead peer is detected within 5 s on a LAN."""
WRITES = 5
"""Items each host writes during the cut."""
SETTLE_S = 1.0
POLL_MIN_S = 0.03
"""The shortest time between the starts of two sweeps."""
MEET_TIMEOUT_S = 90.0
DETECT_TIMEOUT_S = 30.0
APART_TIMEOUT_S = 30.0
HEAL_TIMEOUT_S = 90.0
SERVING = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO agentsync\.node: node \S+ serving", re.MULTILINE
)

MEASURES: tuple[tuple[str, str], ...] = (
    ("serving_s", "start -> every node serving HTTP (Python start-up)"),
    ("health_s", "start -> every node answers /v1/health (via its agent)"),
    ("meet_s", "start -> every node sees every other alive"),
    ("discovery_s", "  of which after the last node served (mDNS)"),
    ("suspect_s", "cut -> suspect on every other node"),
    ("dead_s", "cut -> dead on every other node"),
    ("isolated_dead_s", "cut -> the cut host sees every other dead"),
    ("heal_alive_s", "heal -> every node sees every other alive"),
    ("heal_converged_s", "heal -> every write on every node"),
)


class TimedOut(Exception):
    """A deadline passed before what a phase waits for happened."""


class Poller:
    """Asks every host's agent at once, one thread per host, and times the answers."""

    def __init__(self, count: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="discovery-poll")
        self._warm: set[int] = set()
        self.sweeps: list[float] = []
        """How long each sweep took: the resolution of the times measured."""

    def timed(self, node: HostNode, ask: Callable[[HostNode], T]) -> tuple[float, T]:
        """``ask(node)`` and the monotonic time it counts at (see the module docstring)."""
        sent = time.monotonic()
        value = ask(node)
        came = time.monotonic()
        if node.i in self._warm:
            return (sent + came) / 2, value
        self._warm.add(node.i)  # the first ask waited for the agent to start
        return came, value

    def sweep(self, nodes: Sequence[HostNode], ask: Callable[[HostNode], T]) -> list[T]:
        """``ask`` every node at once; the answers in the order of ``nodes``."""
        began = time.monotonic()
        answers = list(self._pool.map(ask, nodes))
        self.sweeps.append(time.monotonic() - began)
        return answers

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def poll(
    poller: Poller,
    *,
    nodes: Sequence[HostNode],
    ask: Callable[[HostNode], T],
    see: Callable[[HostNode, T], None],
    done: Callable[[], bool],
    timeout: float,
    what: str,
) -> None:
    """Sweep ``nodes`` with ``ask``, handing each answer to ``see``, until ``done()``.

    Bounded in time (``timeout``, plus at most one sweep) and in sweeps.
    """
    deadline = time.monotonic() + timeout
    for _ in range(math.ceil(timeout / POLL_MIN_S) + 1):
        began = time.monotonic()
        for node, answer in zip(nodes, poller.sweep(nodes, ask), strict=True):
            see(node, answer)
        if done():
            return
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(max(0.0, POLL_MIN_S - (now - began)))
    raise TimedOut(f"{what}: not within {timeout:g} s")


@dataclass
class Since:
    """When a condition last became true on each host (absent while it is false)."""

    count: int
    times: dict[int, float] = field(default_factory=dict)

    def update(self, i: int, t: float, holds: bool) -> None:
        if not holds:
            self.times.pop(i, None)
        else:
            self.times.setdefault(i, t)

    def all(self) -> float | None:
        """When it became true on the last host, if it holds on all of them now."""
        return max(self.times.values()) if len(self.times) == self.count else None


def states_of(health: dict[str, Any]) -> dict[str, str]:
    """Each test host's state in a health answer, as ``HostNode.states`` gives it."""
    return {
        peer["url"]: peer["state"]
        for peer in health.get("peers", [])
        if not peer["url"].startswith("http://127.")
    }


def all_in(states: dict[str, str], urls: set[str], state: str) -> bool:
    return all(states.get(url) == state for url in urls)


def serving_times(logs: Path, nodes: Sequence[HostNode], wall0: float) -> dict[str, float | None]:
    """Seconds from ``wall0`` (wall clock) to each node's log line saying it serves."""
    found: dict[str, float | None] = {}
    for node in nodes:
        match = SERVING.search(node.log.read_text()) if node.log.exists() else None
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f") if match else None
        found[node.node_id] = None if stamp is None else stamp.timestamp() - wall0
    return found


def run_once(n: int, run: int, logs: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """One run on ``n`` fresh hosts: start, cut the last host, write on both sides, heal."""
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"hosts": n, "run": run, "error": None}
    with make_hosts(n) as hosts:
        wall0, t0 = time.time(), time.monotonic()
        nodes = [
            HostNode(hosts, i, logs, gossip_interval=GOSSIP_INTERVAL_S) for i in range(1, n + 1)
        ]
        result["launch_s"] = time.monotonic() - t0
        poller = Poller(n)
        try:
            _phases(hosts, nodes=nodes, poller=poller, t0=t0, result=result, log=log)
        except (TimedOut, AssertionError) as exc:  # AssertionError: an agent did not answer
            result["error"] = str(exc).splitlines()[0]
            log(f"  FAILED: {exc}")
            for node in nodes:
                log(_describe(node))
        finally:
            poller.close()
            result["sweep_s"] = _stats(poller.sweeps)
            serving = serving_times(logs, nodes, wall0)
            result["serving_per_node_s"] = serving
            known = [s for s in serving.values() if s is not None]
            result["serving_s"] = max(known) if len(known) == n else None
            if result["serving_s"] is not None and result.get("meet_s") is not None:
                result["discovery_s"] = result["meet_s"] - result["serving_s"]
    return result


def _describe(node: HostNode) -> str:
    """What to print about a node when a run fails."""
    try:
        return node.describe()
    except AssertionError as exc:  # its agent does not answer
        return f"--- {node.node_id}: {exc}"


def writes_on(node: HostNode) -> set[str]:
    """The items of the set ``writes`` in the node."""
    return node.items("writes")


def _phases(
    hosts: Hosts,
    *,
    nodes: list[HostNode],
    poller: Poller,
    t0: float,
    result: dict[str, Any],
    log: Callable[[str], None],
) -> None:
    n = len(nodes)
    others_of = {node.i: {o.url() for o in nodes if o is not node} for node in nodes}

    # 1. start -> every node answers, then sees every other alive
    answered: dict[int, float] = {}
    meet = Since(n)

    def see_start(node: HostNode, answer: tuple[float, dict[str, Any]]) -> None:
        t, health = answer
        if health:
            answered.setdefault(node.i, t - t0)
        meet.update(node.i, t, all_in(states_of(health), others_of[node.i], "alive"))

    poll(
        poller,
        nodes=nodes,
        ask=lambda node: poller.timed(node, HostNode.health),
        see=see_start,
        done=lambda: meet.all() is not None,
        timeout=MEET_TIMEOUT_S,
        what="every node sees every other alive",
    )
    met = meet.all()
    assert met is not None
    result["health_per_node_s"] = {f"h{i}": answered.get(i) for i in sorted(answered)}
    result["health_s"] = max(answered.values()) if len(answered) == n else None
    result["meet_s"] = met - t0
    log(f"  start: every node answers after {result['health_s']:.2f} s, all alive after "
        f"{result['meet_s']:.2f} s")  # fmt: skip

    # 2. cut the last host -> suspect, then dead, on every other node
    time.sleep(SETTLE_S)  # deliberate: the cut falls in steady gossip (no condition waited on)
    cut, others = nodes[-1], nodes[:-1]
    target = cut.url()
    seen: dict[str, list[str]] = {node.node_id: [] for node in others}
    suspect_at: dict[int, float] = {}
    dead_at: dict[int, float] = {}
    isolated: list[float] = []
    hosts.cut(cut.i)
    t_cut = time.monotonic()

    def see_cut(node: HostNode, answer: tuple[float, dict[str, str]]) -> None:
        t, states = answer
        if node is cut:
            if not isolated and all_in(states, others_of[cut.i], "dead"):
                isolated.append(t - t_cut)
            return
        state = states.get(target, "gone")
        if state not in seen[node.node_id][-1:]:
            seen[node.node_id].append(state)
        if state in ("suspect", "dead"):
            suspect_at.setdefault(node.i, t - t_cut)
        if state == "dead":
            dead_at.setdefault(node.i, t - t_cut)

    poll(
        poller,
        nodes=nodes,
        ask=lambda node: poller.timed(node, HostNode.states),
        see=see_cut,
        done=lambda: len(dead_at) == len(others) and bool(isolated),
        timeout=DETECT_TIMEOUT_S,
        what=f"{cut.node_id} dead on every other node, and they on it",
    )
    result["cut_host"] = cut.node_id
    result["states_seen"] = seen
    result["suspicion_before_death"] = all(s[-3:] == ["alive", "suspect", "dead"]
                                           for s in seen.values())  # fmt: skip
    result["suspect_per_node_s"] = {f"h{i}": t for i, t in sorted(suspect_at.items())}
    result["dead_per_node_s"] = {f"h{i}": t for i, t in sorted(dead_at.items())}
    result["suspect_s"] = max(suspect_at.values())
    result["dead_s"] = max(dead_at.values())
    result["isolated_dead_s"] = isolated[0]
    log(f"  cut {cut.node_id}: suspect everywhere after {result['suspect_s']:.2f} s, dead after "
        f"{result['dead_s']:.2f} s (it saw the others dead after {isolated[0]:.2f} s)")  # fmt: skip

    # 3. write on both sides; once each side holds its own writes, heal
    written = {node.i: {f"{node.node_id}-{k}" for k in range(WRITES)} for node in nodes}
    poller.sweep(nodes, lambda node: node.add("writes", *sorted(written[node.i])))
    everything = set().union(*written.values())
    side = everything - written[cut.i]
    apart = Since(n)
    t_writes = time.monotonic()

    def see_apart(node: HostNode, answer: tuple[float, set[str]]) -> None:
        t, items = answer
        apart.update(node.i, t, items == (written[cut.i] if node is cut else side))

    poll(
        poller,
        nodes=nodes,
        ask=lambda node: poller.timed(node, writes_on),
        see=see_apart,
        done=lambda: apart.all() is not None,
        timeout=APART_TIMEOUT_S,
        what="each side of the cut holds its own writes",
    )
    hosts.heal(cut.i)
    t_heal = time.monotonic()
    result["apart_converged_s"] = (apart.all() or t_writes) - t_writes
    result["partition_s"] = t_heal - t_cut
    alive, held = Since(n), Since(n)

    def ask_heal(node: HostNode) -> tuple[tuple[float, dict[str, str]], tuple[float, set[str]]]:
        return poller.timed(node, HostNode.states), poller.timed(node, writes_on)

    def see_heal(
        node: HostNode, answer: tuple[tuple[float, dict[str, str]], tuple[float, set[str]]]
    ) -> None:
        (t1, states), (t2, items) = answer
        alive.update(node.i, t1, all_in(states, others_of[node.i], "alive"))
        held.update(node.i, t2, items == everything)

    poll(
        poller,
        nodes=nodes,
        ask=ask_heal,
        see=see_heal,
        done=lambda: alive.all() is not None and held.all() is not None,
        timeout=HEAL_TIMEOUT_S,
        what="every node sees every other alive and holds every write after the heal",
    )
    result["heal_alive_s"] = (alive.all() or t_heal) - t_heal
    result["heal_converged_s"] = (held.all() or t_heal) - t_heal
    log(f"  heal after {result['partition_s']:.1f} s apart: all alive after "
        f"{result['heal_alive_s']:.2f} s, every write everywhere after "
        f"{result['heal_converged_s']:.2f} s")  # fmt: skip


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "all": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "all": list(values),
    }


def summarize(runs: list[dict[str, Any]], n: int, bound: float) -> dict[str, Any]:
    mine = [r for r in runs if r["hosts"] == n]
    good = [r for r in mine if r["error"] is None]
    measures = {
        name: _stats([r[name] for r in good if r.get(name) is not None]) for name, _ in MEASURES
    }
    dead_max = measures["dead_s"]["max"]
    return {
        "hosts": n,
        "runs": len(mine),
        "failures": len(mine) - len(good),
        "measures": measures,
        "sweep_median_s": statistics.median(
            [r["sweep_s"]["median"] for r in mine if r["sweep_s"]["median"] is not None]
            or [math.nan]
        ),
        "partition_s": _stats([r["partition_s"] for r in good]),
        "suspicion_before_death": all(r["suspicion_before_death"] for r in good) if good else None,
        "detection_bound_s": bound,
        "documented_bound_s": DOCUMENTED_BOUND_S,
        "detection": "n/a"
        if dead_max is None
        else ("PASS" if dead_max <= DOCUMENTED_BOUND_S else "MISS"),
    }


def render(summaries: dict[int, dict[str, Any]]) -> str:
    def cell(stats: dict[str, Any]) -> str:
        if stats["median"] is None:
            return "-"
        return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"

    counts = list(summaries)
    width = max(len(label) for _, label in MEASURES)
    head = f"{'seconds: median (min-max)':<{width}}"
    lines = [head + "".join(f"  {f'{n} hosts':>20}" for n in counts)]
    for name, label in MEASURES:
        lines.append(
            f"{label:<{width}}"
            + "".join(f"  {cell(summaries[n]['measures'][name]):>20}" for n in counts)
        )
    for n, s in summaries.items():
        lines.append(
            f"{n} hosts: {s['runs'] - s['failures']}/{s['runs']} runs ok; poll sweep "
            f"{s['sweep_median_s'] * 1000:.0f} ms (median); suspicion before death in every "
            f"run: {s['suspicion_before_death']}; detection {s['detection']} "
            f"(bound {s['detection_bound_s']:.2f} s, documented <= {DOCUMENTED_BOUND_S:g} s)"
        )
    return "\n".join(lines)


def _host_count(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("a run needs at least 2 hosts")
    if value > 250:
        raise argparse.ArgumentTypeError("hosts are addressed 10.77.x.1-250")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--json", metavar="PATH", help="write the summary and every run here")
    parser.add_argument(
        "--hosts",
        type=_host_count,
        nargs="+",
        default=list(DEFAULT_HOSTS),
        metavar="N",
        help="host counts (3 8)",
    )
    parser.add_argument(
        "--runs", type=positive, default=DEFAULT_RUNS, help="runs per host count (3)"
    )
    parser.add_argument(
        "--logs", metavar="DIR", help="keep the nodes' logs here (default: discarded)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench/discovery.py needs network namespaces: {reason}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    load_before = loadavg()
    git = git_info()  # the code the nodes run is read as each starts: note it before and after
    bound = MembershipConfig().detection_time(
        exchange_timeout=EXCHANGE_TIMEOUT_S, round_interval=GOSSIP_INTERVAL_S * ROUND_LATE
    )

    def log(text: str) -> None:
        print(text, flush=True)

    log(
        f"discovery: hosts {args.hosts}, {args.runs} runs each (interleaved), gossip every "
        f"{GOSSIP_INTERVAL_S:g} s, default membership timings (detection bound {bound:.2f} s)"
    )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentsync-discovery-") as scratch:
        logs_root = Path(args.logs) if args.logs else Path(scratch)
        for run in range(1, args.runs + 1):
            for n in args.hosts:
                log(f"{n} hosts, run {run}:")
                runs.append(run_once(n, run, logs_root / f"{n}-hosts-run{run}", log))
    summaries = {n: summarize(runs, n, bound) for n in dict.fromkeys(args.hosts)}
    log("")
    log(render(summaries))
    wall = time.perf_counter() - began
    failed = sum(s["failures"] for s in summaries.values())
    log(f"\ntotal {wall:.1f} s" + (f"; {failed} run(s) failed" if failed else ""))
    git_after = git_info()
    if git_after != git or git["agentsync_dirty"]:
        log(f"note: the code changed or was uncommitted during the run: {git} -> {git_after}")
    if args.json:
        report = {
            **report_header(argv),
            "config": {
                "hosts": args.hosts,
                "runs": args.runs,
                "gossip_interval_s": GOSSIP_INTERVAL_S,
                "membership": "defaults (MembershipConfig())",
                "writes_per_host": WRITES,
                "settle_s": SETTLE_S,
                "poll_min_s": POLL_MIN_S,
                "order": "host counts interleaved, fresh namespaces per run",
                "cut_host": "the last host",
            },
            **environment(loadavg_before=load_before, loadavg_after=loadavg()),
            "git": git,
            "git_after": git_after,
            "measures": dict(MEASURES),
            "sizes": {str(n): s for n, s in summaries.items()},
            "runs": runs,
            "wall_seconds": wall,
        }
        log(f"wrote {write_json(args.json, report)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
