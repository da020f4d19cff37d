"""The offline demo: two agents diverge with no network, then converge by deltas.

It is what ``agentsync demo`` (and ``make demo``) runs until the networked
demo arrives. Every step prints what each agent sees, so the semantics
(add-wins, last-writer-wins, update-wins) are visible, not just asserted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count

from agentsync.crdt import LWWRegister, ORMap, ORSet, PNCounter, decode, encode


def _fake_clock(start_ns: int) -> Callable[[], int]:
    """A deterministic wall clock, so every run prints the same story."""
    ticks: Iterator[int] = count(start_ns, 1_000_000)
    return lambda: next(ticks)


def _ship(delta: ORMap, wire: list[bytes]) -> None:
    """Put a delta on the (simulated) wire as bytes, like the sync layer will."""
    wire.append(encode(delta))


def _show(say: Callable[[str], None], title: str, *agents: ORMap) -> None:
    say(f"\n== {title}")
    for agent in agents:
        board = dict(sorted(agent.value.items(), key=lambda item: str(item[0])))
        say(f"  {agent.replica_id:<8} {board}")


def _receive(agent: ORMap, wire: list[bytes]) -> None:
    """Decode and merge every delta waiting on the wire, then clear it."""
    for data in wire:
        agent.merge(decode(data, ORMap))
    wire.clear()


def run(say: Callable[[str], None] = print) -> bool:
    """Tell the story and return True when both agents end up equal."""
    planner = ORMap("planner", clock=_fake_clock(1_700_000_000_000_000_000))
    # The worker's wall clock runs 5 s behind; the hybrid logical clock copes.
    worker = ORMap("worker", clock=_fake_clock(1_699_999_995_000_000_000))
    to_worker: list[bytes] = []
    to_planner: list[bytes] = []

    say("Two agents share one board: a set of tasks, a done-counter and a status.")
    _ship(planner.update("tasks", ORSet, lambda s: s.add("write report")), to_worker)
    _ship(planner.update("status", LWWRegister, lambda r: r.set("planning")), to_worker)
    _receive(worker, to_worker)
    _show(say, "1. in sync", planner, worker)

    say("\nThe link drops. Both keep writing, at local speed, with no coordinator.")
    _ship(planner.update("tasks", ORSet, lambda s: s.remove("write report")), to_worker)
    _ship(planner.update("tasks", ORSet, lambda s: s.add("review code")), to_worker)
    _ship(worker.update("tasks", ORSet, lambda s: s.add("write report")), to_planner)
    _ship(worker.update("done", PNCounter, lambda c: c.increment(2)), to_planner)
    _ship(planner.update("done", PNCounter, lambda c: c.increment(1)), to_worker)
    _ship(worker.update("status", LWWRegister, lambda r: r.set("working")), to_planner)
    _show(say, "2. offline, diverged", planner, worker)

    sent = sum(map(len, to_worker)) + sum(map(len, to_planner))
    say(f"\nThe link returns. They swap {len(to_worker) + len(to_planner)} deltas ({sent} bytes).")
    _receive(worker, to_worker)
    _receive(planner, to_planner)
    _show(say, "3. converged", planner, worker)

    say(
        "\n- 'write report' survives: the worker's re-add was concurrent with the remove"
        " (add-wins).\n- done = 3: concurrent increments both count."
        "\n- status = 'working': the worker wrote it after seeing 'planning', so its hybrid"
        " logical clock stamped it later, although its wall clock is 5 s behind."
    )
    equal = planner == worker
    say(f"\nconverged: {equal}")
    return equal
