"""Hypothesis strategies for the codec tests: values, and reachable replica states.

A *scenario* runs random mutations on two or three replicas of one type and
ships deltas, delta groups and full states between them, so every state it
yields is one the public API can reach. LWW clocks are fake wall clocks set
around ``BASE_NS`` (2**62 ns, the year 2116): far ahead of the real clock, so
a decoded replica (whose clock is the real one) only wins a new write if it
observed the state's timestamps.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hypothesis import strategies as st

from agentsync.crdt import (
    CRDT,
    CRDT_TYPES,
    EWFlag,
    GCounter,
    GSet,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
BASE_NS = 2**62
CLOCKED = (LWWRegister, LWWMap, ORMap)
REPLICA_IDS = ("alice", "bob", "chloé-🛰")

# -- values -------------------------------------------------------------------

floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.5]),
)
ints = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, 2**32, -(2**31) - 1]),
)
texts = st.one_of(st.text(max_size=8), st.sampled_from(["", "ünïcødé", "🎉\u200d", "\x00"]))
blobs = st.binary(max_size=8)

hashable_scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, blobs)
scalars = hashable_scalars


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(texts, children, max_size=3),
    )


values = st.recursive(scalars, _containers, max_leaves=8)
"""Every kind of value a register, an LWWMap or a set accepts (lists/dicts included)."""

keys = st.one_of(
    st.sampled_from(["k", "k2", 7, (1, "a"), b"\x00"]),
    st.recursive(hashable_scalars, lambda ch: st.lists(ch, max_size=3).map(tuple), max_leaves=4),
)
"""Set elements and map keys: hashable values, with a small pool so keys collide."""


def canon(value: Any) -> str:
    """A string that equals another's only when the values are *exactly* equal.

    Unlike ``==`` it tells True from 1, 1.0 from 1, -0.0 from 0.0, a tuple
    from a list and a read-only mapping from a dict.
    """
    kind = type(value)
    if value is None or kind is bool:
        return repr(value)
    if kind is int:
        return f"i{value}"
    if kind is float:
        assert math.isfinite(value)
        return "f" + struct.pack(">d", value).hex()
    if kind is str or kind is bytes:
        return kind.__name__[0] + repr(value)
    if kind is tuple:
        return "(" + ",".join(canon(v) for v in value) + ")"
    if kind is list:
        return "[" + ",".join(canon(v) for v in value) + "]"
    if kind is MappingProxyType or kind is dict:
        inner = ",".join(sorted(f"{canon(k)}:{canon(v)}" for k, v in value.items()))
        return ("M{" if kind is MappingProxyType else "D{") + inner + "}"
    if kind is frozenset or kind is set:
        return "S{" + ",".join(sorted(canon(v) for v in value)) + "}"
    raise AssertionError(f"unexpected {kind.__name__} in a value")


def read(replica: CRDT) -> str:
    """The exact plain value of a replica (ORMaps converted recursively)."""
    return canon(replica.value)


# -- reachable states ---------------------------------------------------------


class FakeWall:
    """A wall clock the scenario sets by hand; it may go backwards or stand still."""

    def __init__(self, now: int = BASE_NS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make(kind: type[CRDT], replica_id: str, wall: FakeWall | None = None) -> Any:
    """A fresh replica; the clocked types get ``wall`` (a new FakeWall by default)."""
    if kind in CLOCKED:
        return kind(replica_id, clock=wall or FakeWall())  # type: ignore[call-arg]
    return kind(replica_id)


def _pick_key(draw: st.DrawFn, present: list[Any]) -> Any:
    if present and draw(st.booleans()):
        return draw(st.sampled_from(present))
    return draw(keys)


def mutate(draw: st.DrawFn, replica: Any, level: int = 0) -> Any:
    """Apply one random mutator to ``replica``; return its delta."""
    kind = type(replica)
    if kind is GCounter:
        return replica.increment(draw(st.integers(0, 3) | st.sampled_from([1000, 2**40])))
    if kind is PNCounter:
        n = draw(st.integers(0, 3) | st.sampled_from([1000, 2**40]))
        return replica.increment(n) if draw(st.booleans()) else replica.decrement(n)
    if kind is GSet:
        return replica.add(_pick_key(draw, list(replica)))
    if kind is ORSet:
        present = list(replica)
        op = draw(st.sampled_from(["add", "add", "add", "remove", "discard", "clear"]))
        if op == "remove" and present:
            return replica.remove(draw(st.sampled_from(present)))
        if op == "discard":
            return replica.discard(_pick_key(draw, present))
        if op == "clear":
            return replica.clear()
        return replica.add(_pick_key(draw, present))
    if kind in (LWWRegister, MVRegister):
        return replica.set(draw(values))
    if kind is EWFlag:
        return replica.enable() if draw(st.booleans()) else replica.disable()
    if kind is LWWMap:
        present = list(replica)
        op = draw(st.sampled_from(["set", "set", "set", "remove", "discard"]))
        if op == "remove" and present:
            return replica.remove(draw(st.sampled_from(present)))
        if op == "discard":
            return replica.discard(_pick_key(draw, present))
        return replica.set(_pick_key(draw, present), draw(values))
    assert kind is ORMap
    present = list(replica)
    if present and draw(st.integers(0, 4)) == 0:
        return replica.remove(draw(st.sampled_from(present)))
    key = _pick_key(draw, present)
    if key in replica:
        nested_kind = type(replica[key])
    elif level < 3 and draw(st.integers(0, 2)) == 0:
        nested_kind = ORMap  # bias towards nesting maps three deep
    else:
        nested_kind = draw(st.sampled_from(CRDT_TYPES))
    return replica.update(key, nested_kind, lambda nested: mutate(draw, nested, level + 1))


@dataclass
class Scenario:
    """Replicas of one type after a random history, and every delta it produced."""

    kind: type[CRDT]
    replicas: list[Any]
    walls: list[FakeWall]
    deltas: list[Any] = field(default_factory=list)


@st.composite
def scenarios(
    draw: st.DrawFn,
    kind: type[CRDT],
    max_steps: int = 14,
    replica_ids: tuple[str, ...] = REPLICA_IDS,
) -> Scenario:
    """Two or three replicas of ``kind`` after random mutations and merges."""
    n = draw(st.integers(2, min(3, len(replica_ids))))
    walls = [FakeWall() for _ in range(n)]
    scenario = Scenario(kind, [make(kind, replica_ids[i], walls[i]) for i in range(n)], walls)
    reps = scenario.replicas
    for _ in range(draw(st.integers(0, max_steps))):
        i = draw(st.integers(0, n - 1))
        action = draw(st.sampled_from(["write", "write", "write", "delta", "state", "group"]))
        if action == "write":
            walls[i].now = BASE_NS + draw(st.integers(0, 10**10))  # may go backwards
            scenario.deltas.append(mutate(draw, reps[i]))
        elif action == "delta" and scenario.deltas:
            reps[i].merge(draw(st.sampled_from(scenario.deltas)))
        elif action == "state":
            reps[i].merge(reps[draw(st.integers(0, n - 1))])
        elif action == "group" and len(scenario.deltas) >= 2:
            first, second = draw(st.lists(st.sampled_from(scenario.deltas), min_size=2, max_size=2))
            group = first.copy()
            group.merge(second)
            scenario.deltas.append(group)
    return scenario


def states(kind: type[CRDT]) -> st.SearchStrategy[Any]:
    """One replica of a random scenario."""
    return scenarios(kind).flatmap(lambda s: st.sampled_from(s.replicas))


any_kind = st.sampled_from(CRDT_TYPES)
any_state = any_kind.flatmap(states)
