"""Hypothesis strategies for the CRDT core, and the reference model they drive.

Three layers:

* values and keys in the replicated domain (:func:`values`, :data:`ELEMENTS`,
  :data:`MAP_KEYS`), with :func:`expected` giving how a written value reads back;
* *specs*: which type a replica is, and for an ORMap which type lives under
  which key, nested to any depth (:class:`Spec`, :func:`specs`);
* *worlds*: 2-4 replicas of one spec, each on an injected deterministic wall
  clock (one simulated time plus a per-replica skew well under the 60 s
  bound), driven by random mutations, delta deliveries (any order, duplicates)
  and full-state merges (:class:`World`, :func:`worlds`).

A world keeps a reference model next to the replicas. The model knows nothing
of dots or contexts: it records *events* (one per mutation that changes
something) and, for each event, the set of earlier events it *observed and
superseded* (``kills``): what an observed-remove, a reset-remove or an
overwrite drops at its origin. A replica's knowledge is a set of events (its
own, plus those of the deltas and states it merged); its expected value is
computed from the events of that set that nothing in the set killed, with
the plain rule of each type (sum, union, enable-wins, last-writer-wins by
(timestamp, replica id), multi-value by dot, update-wins maps). This is the
classic specification of these types (Shapiro et al. 2011; riak_dt), and it
holds for any delivery order, so worlds check every replica against it after
every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st

from agentsync.crdt import (
    CRDT,
    CRDT_TYPES,
    EWFlag,
    GCounter,
    GSet,
    HybridLogicalClock,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    decode,
    encode,
)
from agentsync.crdt.setbase import SetBase

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[T]], T]
"""``draw`` of ``st.composite``, or ``data.draw`` of ``st.data()``."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
EPOCH_NS = 1_750_000_000 * 10**9
"""Where simulated time starts (mid-2025, in ns since the Unix epoch)."""
MAX_SKEW_NS = 60 * 10**9
"""The library's default bound on how far ahead a remote timestamp may be."""

RIDS = ("a", "b", "c", "d")
CLOCKED: tuple[type[CRDT], ...] = (LWWRegister, LWWMap, ORMap)
"""The types whose constructor takes ``clock=``."""
FLAT_KINDS: tuple[type[CRDT], ...] = (
    GCounter,
    PNCounter,
    GSet,
    ORSet,
    LWWRegister,
    MVRegister,
    EWFlag,
    LWWMap,
)
"""Every type that is not an ORMap."""


def examples(n: int) -> int:
    """``n`` examples under the default profile, scaled with the loaded profile.

    Tests set their own ``max_examples`` (to fit the time budget), which would
    override the profile; this keeps ``HYPOTHESIS_PROFILE=explore`` (2000
    instead of 200 examples) ten times as thorough.
    """
    return max(1, n * settings.default.max_examples // 200)  # type: ignore[union-attr]


# -- values and keys ------------------------------------------------------------

ELEMENTS: tuple[Hashable, ...] = (0, 1, 2, -7, "x", "y", "", b"z", None, 2.5, (1, "x"), ("y",))
"""Set elements: few, so that operations collide. No bool or integral float:
``True == 1`` and ``1.0 == 1`` would make them the same element (see the
semantics tests)."""
MAP_KEYS: tuple[Hashable, ...] = ("k0", "k1", 7, ("t", 2), b"k")
"""LWWMap keys, and the keys that specs give to ORMap fields."""

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.binary(max_size=6),
)


def values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any value of the domain: scalars, lists, tuples and str-keyed dicts of them."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=3), children, max_size=3),
        ),
        max_leaves=max_leaves,
    )


register_values = st.one_of(st.sampled_from([1, "v", None, (1, 2), "w"]), values())
"""Register values: often equal to each other (MVRegister shows equal values once)."""


def expected(value: Any) -> Any:
    """How a written value reads back: lists (and tuples) as tuples, dicts as mappings."""
    if isinstance(value, (list, tuple)):
        return tuple(expected(item) for item in value)
    if isinstance(value, (dict, MappingProxyType)):
        return {key: expected(item) for key, item in value.items()}
    return value


def deep_frozen(value: Any) -> bool:
    """True when ``value`` holds no list or dict, only tuples and read-only mappings."""
    if isinstance(value, (list, dict)):
        return False
    if isinstance(value, tuple):
        return all(deep_frozen(item) for item in value)
    if isinstance(value, MappingProxyType):
        return all(deep_frozen(item) for item in value.values())
    if isinstance(value, float):
        return math.isfinite(value)
    return True


# -- specs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A replica's type; for an ORMap, also the type under each of its keys.

    A key may appear more than once with different types: replicas then create
    it concurrently as different types (and locally, a key refuses a type it
    does not hold).
    """

    kind: type[CRDT]
    fields: tuple[tuple[Hashable, Spec], ...] = ()

    def __post_init__(self) -> None:
        """Merge the fields of one key's nested ORMaps: one key, one nested map."""
        merged: list[tuple[Hashable, Spec]] = []
        for key, spec in self.fields:
            twin = next(
                (i for i, (k, s) in enumerate(merged) if k == key and s.kind is spec.kind),
                None,
            )
            if twin is None:
                merged.append((key, spec))
            elif spec.kind is ORMap:
                merged[twin] = (key, Spec(ORMap, merged[twin][1].fields + spec.fields))
        object.__setattr__(self, "fields", tuple(merged))

    def field(self, key: Hashable) -> Spec:
        for name, spec in self.fields:
            if name == key:
                return spec
        raise KeyError(key)

    @property
    def depth(self) -> int:
        """How many ORMaps deep this spec nests (0 for a flat type)."""
        if self.kind is not ORMap:
            return 0
        return 1 + max((spec.depth for _, spec in self.fields), default=0)

    def __str__(self) -> str:
        if self.kind is not ORMap:
            return self.kind.__name__
        inner = ",".join(f"{key!r}:{spec}" for key, spec in self.fields)
        return f"ORMap{{{inner}}}"


def ormap(**fields: type[CRDT] | Spec) -> Spec:
    """An ORMap spec from keyword fields (str keys)."""
    return Spec(
        ORMap,
        tuple((k, kind if isinstance(kind, Spec) else Spec(kind)) for k, kind in fields.items()),
    )


FLAT_SPECS = tuple(Spec(kind) for kind in FLAT_KINDS)
EVERY_NESTED = ormap(
    gc=GCounter,
    pn=PNCounter,
    gs=GSet,
    os=ORSet,
    lr=LWWRegister,
    mv=MVRegister,
    ef=EWFlag,
    lm=LWWMap,
    om=ormap(s=ORSet, c=PNCounter, m=MVRegister),
)
"""An ORMap with every type nested once (and an ORMap inside it)."""
DEEP = Spec(
    ORMap,
    (
        (
            ("t", 2),
            Spec(
                ORMap,
                (
                    (7, ormap(s=ORSet, c=GCounter, f=EWFlag, r=LWWRegister)),
                    ("m", Spec(MVRegister)),
                ),
            ),
        ),
        ("l", Spec(LWWMap)),
        ("p", Spec(PNCounter)),
    ),
)
"""ORMap in ORMap in ORMap (depth 3), with non-str keys on the way."""
NAMED_SPECS: dict[str, Spec] = {
    **{spec.kind.__name__: spec for spec in FLAT_SPECS},
    "ORMap[ORSet]": ormap(k0=ORSet, k1=ORSet),
    "ORMap[counters]": ormap(g=GCounter, p=PNCounter),
    "ORMap[registers]": ormap(l=LWWRegister, m=MVRegister, f=EWFlag, w=LWWMap),
    "ORMap[every]": EVERY_NESTED,
    "ORMap[conflicts]": Spec(
        ORMap,
        (
            ("k", Spec(ORSet)),
            ("k", Spec(GCounter)),
            ("k", Spec(LWWRegister)),
            ("j", Spec(MVRegister)),
            ("j", ormap(s=ORSet, f=EWFlag)),
            ("j", ormap(s=GSet, c=PNCounter)),
            ("m", Spec(EWFlag)),
            ("m", Spec(LWWMap)),
        ),
    ),
    "ORMap[ORMap[ORMap]]": DEEP,
}
"""The specs that the law tests run one by one."""


def specs(max_leaves: int = 6) -> st.SearchStrategy[Spec]:
    """Random specs: flat types, and ORMaps of them nested a few levels."""
    flat = st.sampled_from(FLAT_SPECS)
    keys = st.sampled_from(MAP_KEYS[:4])  # a key may get several types
    return st.recursive(
        flat,
        lambda children: st.lists(st.tuples(keys, children), min_size=1, max_size=5).map(
            lambda fields: Spec(ORMap, tuple(fields))
        ),
        max_leaves=max_leaves,
    )


# -- clocks ------------------------------------------------------------------------


class SimTime:
    """Simulated time shared by the replicas of a world; it moves only when told."""

    def __init__(self, start: int = EPOCH_NS) -> None:
        self.now = start

    def clock(self, skew: int = 0) -> Callable[[], int]:
        """A replica's wall clock: simulated time plus a fixed skew, in ns."""
        return lambda: self.now + skew

    def advance(self, ns: int) -> None:
        self.now += ns


SKEWS = st.sampled_from([0, 0, 0, 1, -1, 999, -2_000_000_000, 5_000_000_000, -9_000_000_000])
"""Per-replica clock skews: often equal (timestamp ties), at most 14 s apart."""
TICKS = st.sampled_from([0, 1, 1_000, 1_000_000, 1_000_000_000])


def make(kind: type[CRDT], rid: str, clock: Callable[[], int] | HybridLogicalClock) -> CRDT:
    """A fresh replica of ``kind``; the clocked types get ``clock``."""
    if kind in CLOCKED:
        return kind(rid, clock=clock)  # type: ignore[call-arg]
    return kind(rid)


# -- the reference model -------------------------------------------------------------

Path = tuple[tuple[Hashable, type[CRDT]], ...]
"""Where a nested replica lives: the (key, type) of each ORMap on the way."""

REMOVED = object()
"""The value of an LWWMap remove event (it takes part in last-writer-wins)."""


@dataclass(frozen=True)
class Event:
    """One mutation that changed something, as the model sees it."""

    eid: int
    rid: str
    path: Path
    op: str
    elem: Any = None
    """The set element, or the LWWMap key."""
    value: Any = None
    """The written value as it reads back (REMOVED for an LWWMap remove)."""
    dot: tuple[str, int] | None = None
    """(replica, n) when the event leaves an entry in the store; None for removes."""
    ts: int = 0
    total: int = 0
    """A counter entry's total: the replica's whole contribution."""
    kills: frozenset[int] = frozenset()
    """The events this one observed and dropped (superseded or removed)."""


class Model:
    """Events, and which events each replica knows of."""

    def __init__(self, kind: type[CRDT], rids: Iterable[str]) -> None:
        self.kind = kind
        self.events: list[Event] = []
        self.known: dict[str, set[int]] = {rid: set() for rid in rids}
        self._dots: dict[str, int] = {}

    def record(
        self,
        rid: str,
        path: Path,
        op: str,
        *,
        issues_dot: bool,
        kills: Iterable[Event] = (),
        **kw: Any,
    ) -> Event:
        dot = None
        if issues_dot:
            dot = (rid, self._dots.get(rid, 0) + 1)
            self._dots[rid] = dot[1]
        event = Event(
            len(self.events), rid, path, op, dot=dot, kills=frozenset(e.eid for e in kills), **kw
        )
        self.events.append(event)
        self.known[rid].add(event.eid)
        return event

    def alive(self, known: Iterable[int]) -> list[Event]:
        """The events of ``known`` that left an entry nothing in ``known`` dropped."""
        events = [self.events[eid] for eid in sorted(known)]
        killed: set[int] = set()
        for event in events:
            killed |= event.kills
        return [e for e in events if e.dot is not None and e.eid not in killed]

    def alive_at(self, rid: str, path: Path) -> list[Event]:
        return [e for e in self.alive(self.known[rid]) if e.path == path]

    def alive_under(self, rid: str, path: Path, key: Hashable) -> list[Event]:
        """The alive events anywhere under ``key`` of the ORMap at ``path``."""
        depth = len(path)
        return [
            e
            for e in self.alive(self.known[rid])
            if len(e.path) > depth and e.path[:depth] == path and e.path[depth][0] == key
        ]

    def value(self, known: Iterable[int]) -> Any:
        return model_value(self.kind, self.alive(known), ())

    def value_of(self, rid: str) -> Any:
        return self.value(self.known[rid])


def lww_key(event: Event) -> tuple[int, str]:
    return (event.ts, event.rid)


def model_value(kind: type[CRDT], alive: list[Event], path: Path) -> Any:
    """The value of the replica of ``kind`` at ``path``, given the alive events."""
    if kind is ORMap:
        depth = len(path)
        kinds: dict[Hashable, set[type[CRDT]]] = {}
        for event in alive:
            if len(event.path) > depth and event.path[:depth] == path:
                key, nested = event.path[depth]
                kinds.setdefault(key, set()).add(nested)
        out = {}
        for key, held in kinds.items():
            shown = min(held, key=CRDT_TYPES.index)  # reads show the first type in order
            out[key] = model_value(shown, alive, (*path, (key, shown)))
        return out
    here = [e for e in alive if e.path == path]
    if kind in (GCounter, PNCounter):
        return sum(e.total for e in here)
    if kind in (GSet, ORSet):
        return frozenset(e.elem for e in here)
    if kind is EWFlag:
        return bool(here)
    if kind is MVRegister:
        shown: list[Any] = []
        for event in sorted(here, key=lambda e: e.dot):  # type: ignore[arg-type,return-value]
            if event.value not in shown:
                shown.append(event.value)
        return tuple(shown)
    if kind is LWWRegister:
        return max(here, key=lww_key).value if here else None
    if kind is LWWMap:
        by_key: dict[Hashable, list[Event]] = {}
        for event in here:
            by_key.setdefault(event.elem, []).append(event)
        winners = {key: max(events, key=lww_key) for key, events in by_key.items()}
        return {key: w.value for key, w in winners.items() if w.value is not REMOVED}
    raise AssertionError(kind)


# -- worlds ------------------------------------------------------------------------------


@dataclass
class Sent:
    """A delta in flight: who made it, and the model events it carries."""

    origin: str
    events: frozenset[int]
    delta: CRDT


@dataclass
class Snapshot:
    """One mutation: the replica before, the delta, the replica after."""

    pre: CRDT
    delta: CRDT
    post: CRDT


@dataclass
class _Op:
    draw: Draw[Any]
    rid: str
    events: list[int] = field(default_factory=list)


WIRE = st.sampled_from((False, False, False, True))
"""Whether a delivery goes through encode/decode."""


def through_wire(x: CRDT) -> CRDT:
    """``x`` after a trip through the wire form; it must keep its state and kind."""
    back = decode(encode(x))
    assert type(back) is type(x)
    assert back.is_delta == x.is_delta
    assert back.replica_id == x.replica_id
    return back


AMOUNTS = st.sampled_from([None, 0, 1, 1, 2, 5, 1_000])
"""Counter steps; None calls the mutator with its default (1)."""


class World:
    """Replicas of one spec on simulated clocks, and the model that predicts them."""

    def __init__(
        self,
        spec: Spec,
        skews: dict[str, int],
        *,
        snapshots: bool = False,
        check_every_step: bool = True,
    ) -> None:
        self.spec = spec
        self.time = SimTime()
        self.skews = dict(skews)
        self.rids = tuple(skews)
        self.replicas: dict[str, CRDT] = {
            rid: make(spec.kind, rid, self.time.clock(skew)) for rid, skew in skews.items()
        }
        self.model = Model(spec.kind, self.rids)
        self.sent: list[Sent] = []
        self.snapshots: list[Snapshot] | None = [] if snapshots else None
        self.check_every_step = check_every_step

    # -- what a world can do -------------------------------------------------------

    def wall(self, rid: str) -> int:
        return self.time.now + self.skews[rid]

    def mutate(self, draw: Draw[Any], rid: str) -> CRDT | None:
        """A random mutation at ``rid``; returns its delta (None if it raised as it must)."""
        replica = self.replicas[rid]
        pre = replica.copy() if self.snapshots is not None else None
        pre_value = replica.value
        op = _Op(draw, rid)
        delta = self._op(op, replica, self.spec, (), top=True)
        if pre is not None:
            assert pre.value == pre_value, "a write to a replica leaked into its copy"
        if delta is None:
            return None
        assert type(delta) is type(replica), (type(delta), type(replica))
        assert delta.is_delta
        assert not replica.is_delta
        self.sent.append(Sent(rid, frozenset(op.events), delta))
        if pre is not None and self.snapshots is not None:
            self.snapshots.append(Snapshot(pre, delta, replica.copy()))
        if self.check_every_step:
            self.check(rid)
        return delta

    def deliver(self, index: int, rid: str, *, wire: bool = False) -> None:
        """Merge the ``index``-th delta sent so far into replica ``rid`` (through bytes)."""
        sent = self.sent[index]
        self.replicas[rid].merge(through_wire(sent.delta) if wire else sent.delta)
        self.model.known[rid] |= sent.events
        if self.check_every_step:
            self.check(rid)

    def deliver_group(self, indices: list[int], rid: str) -> None:
        """Join some deltas into one group first, then merge the group into ``rid``."""
        group = self.sent[indices[0]].delta.copy()
        events: set[int] = set(self.sent[indices[0]].events)
        for index in indices[1:]:
            group.merge(self.sent[index].delta)
            events |= self.sent[index].events
        assert group.is_delta
        self.replicas[rid].merge(group)
        self.model.known[rid] |= events
        if self.check_every_step:
            self.check(rid)

    def merge(self, src: str, dst: str, *, wire: bool = False) -> None:
        """Merge the full state of ``src`` into ``dst`` (through bytes)."""
        state = self.replicas[src]
        self.replicas[dst].merge(through_wire(state) if wire else state)
        self.model.known[dst] |= self.model.known[src]
        if self.check_every_step:
            self.check(dst)

    def deliver_all(self, order: Iterable[int] | None = None) -> None:
        """Deliver every delta sent to every replica (in ``order``, by default as sent)."""
        indices = list(range(len(self.sent)) if order is None else order)
        for rid in self.rids:
            for index in indices:
                self.deliver(index, rid)

    def random_step(self, draw: Draw[Any]) -> None:
        action = draw(st.sampled_from(("mutate", "mutate", "mutate", "deliver", "merge", "tick")))
        rid = draw(st.sampled_from(self.rids))
        if action == "deliver" and self.sent:
            self.deliver(draw(st.integers(0, len(self.sent) - 1)), rid, wire=draw(WIRE))
        elif action == "merge":
            self.merge(draw(st.sampled_from(self.rids)), rid, wire=draw(WIRE))
        elif action == "tick":
            self.time.advance(draw(TICKS))
        else:
            self.mutate(draw, rid)

    # -- checks ----------------------------------------------------------------------

    def check(self, rid: str) -> None:
        """Replica ``rid`` reads what the model predicts, through every read API."""
        replica = self.replicas[rid]
        expect = self.model.value_of(rid)
        assert replica.value == expect, f"replica {rid}: {replica.value!r} != model {expect!r}"
        check_reads(replica, expect)

    def check_all(self) -> None:
        for rid in self.rids:
            self.check(rid)

    def everything(self) -> set[int]:
        """Every event of the world."""
        return {e.eid for e in self.model.events}

    # -- mutations, by type --------------------------------------------------------

    def _op(self, op: _Op, obj: Any, spec: Spec, path: Path, *, top: bool) -> Any:
        kind = spec.kind
        assert type(obj) is kind
        assert obj.replica_id == op.rid
        if kind in (GCounter, PNCounter):
            return self._counter(op, obj, path)
        if kind is GSet:
            return self._gset(op, obj, path)
        if kind is ORSet:
            return self._orset(op, obj, path, top)
        if kind is EWFlag:
            return self._ewflag(op, obj, path)
        if kind in (LWWRegister, MVRegister):
            return self._register(op, obj, path)
        if kind is LWWMap:
            return self._lwwmap(op, obj, path, top)
        return self._ormap(op, obj, spec, path, top)

    def _record(self, op: _Op, path: Path, name: str, **kw: Any) -> Event:
        event = self.model.record(op.rid, path, name, **kw)
        op.events.append(event.eid)
        return event

    def _counter(self, op: _Op, obj: Any, path: Path) -> Any:
        n = op.draw(AMOUNTS)
        sign = 1
        if type(obj) is PNCounter and op.draw(st.booleans()):
            sign = -1
            delta = obj.decrement() if n is None else obj.decrement(n)
        else:
            delta = obj.increment() if n is None else obj.increment(n)
        n = 1 if n is None else n
        if n:
            own = [e for e in self.model.alive_at(op.rid, path) if e.rid == op.rid]
            total = sum(e.total for e in own) + sign * n
            self._record(op, path, "inc", issues_dot=True, total=total, kills=own)
        return delta

    def _gset(self, op: _Op, obj: GSet, path: Path) -> GSet:
        if op.draw(st.booleans()):
            return self._add_all(op, obj, path)
        element = op.draw(st.sampled_from(ELEMENTS))
        observed = [e for e in self.model.alive_at(op.rid, path) if e.elem == element]
        delta = obj.add(element)  # a re-add issues a dot too (it must beat a concurrent reset)
        self._record(op, path, "add", issues_dot=True, elem=element, kills=observed)
        assert element in obj
        return delta

    def _add_all(self, op: _Op, obj: SetBase, path: Path) -> SetBase:
        """``add_all`` of a few elements, repeats included: an add of each distinct one."""
        elements = op.draw(st.lists(st.sampled_from(ELEMENTS), max_size=4))
        delta = obj.add_all(iter(elements))  # any iterable, read once
        for element in dict.fromkeys(elements):
            observed = [e for e in self.model.alive_at(op.rid, path) if e.elem == element]
            self._record(op, path, "add", issues_dot=True, elem=element, kills=observed)
            assert element in obj
        return delta

    def _orset(self, op: _Op, obj: ORSet, path: Path, top: bool) -> ORSet | None:
        action = op.draw(
            st.sampled_from(("add", "add", "add", "add_all", "remove", "discard", "clear"))
        )
        if action == "add_all":
            return self._add_all(op, obj, path)
        element = op.draw(st.sampled_from(ELEMENTS))
        alive = self.model.alive_at(op.rid, path)
        observed = [e for e in alive if e.elem == element]
        if action == "clear":
            delta = obj.clear()
            if alive:
                self._record(op, path, "clear", issues_dot=False, kills=alive)
            assert len(obj) == 0
            return delta
        if action == "add":
            delta = obj.add(element)
            self._record(op, path, "add", issues_dot=True, elem=element, kills=observed)
            assert element in obj
            return delta
        if action == "remove" and not observed:
            if not top:  # never raise inside ORMap.update
                return obj.discard(element)
            before = obj.copy()
            with pytest.raises(KeyError):
                obj.remove(element)
            assert obj == before
            return None
        delta = obj.remove(element) if action == "remove" else obj.discard(element)
        if observed:
            self._record(op, path, "remove", issues_dot=False, kills=observed)
        assert element not in obj
        return delta

    def _ewflag(self, op: _Op, obj: EWFlag, path: Path) -> EWFlag:
        alive = self.model.alive_at(op.rid, path)
        if op.draw(st.booleans()):
            delta = obj.enable()
            self._record(op, path, "enable", issues_dot=True, kills=alive)
            assert obj.value is True
        else:
            delta = obj.disable()
            if alive:
                self._record(op, path, "disable", issues_dot=False, kills=alive)
            assert obj.value is False
        return delta

    def _register(self, op: _Op, obj: Any, path: Path) -> Any:
        value = op.draw(register_values)
        alive = self.model.alive_at(op.rid, path)
        wall = self.wall(op.rid)
        delta = obj.set(value)
        ts = 0
        if type(obj) is LWWRegister:
            ts = obj.clock.last
            self._check_hlc(op.rid, ts, wall)
            assert obj.value == expected(value)
        else:
            assert obj.value == (expected(value),)
        assert deep_frozen(obj.value)
        self._record(op, path, "set", issues_dot=True, value=expected(value), ts=ts, kills=alive)
        return delta

    def _check_hlc(self, rid: str, ts: int, wall: int) -> None:
        """A write's timestamp: at least the wall clock, and later than all it has seen."""
        assert ts >= wall
        seen = [e.ts for e in self.model.alive(self.model.known[rid]) if e.ts]
        assert all(ts > other for other in seen), (ts, max(seen))

    def _lwwmap(self, op: _Op, obj: LWWMap, path: Path, top: bool) -> LWWMap | None:
        action = op.draw(st.sampled_from(("set", "set", "set", "remove", "discard")))
        key = op.draw(st.sampled_from(MAP_KEYS))
        observed = [e for e in self.model.alive_at(op.rid, path) if e.elem == key]
        present = bool(observed) and max(observed, key=lww_key).value is not REMOVED
        wall = self.wall(op.rid)
        if action == "set":
            value = op.draw(register_values)
            delta = obj.set(key, value)
            written = expected(value)
            assert obj[key] == written
            assert deep_frozen(obj[key])
        elif present:
            delta = obj.remove(key) if action == "remove" else obj.discard(key)
            written = REMOVED
            assert key not in obj
        elif action == "remove" and top:
            before = obj.copy()
            with pytest.raises(KeyError):
                obj.remove(key)
            assert obj == before
            return None
        else:
            return obj.discard(key)
        ts = obj.clock.last
        self._check_hlc(op.rid, ts, wall)
        self._record(
            op, path, action, issues_dot=True, elem=key, value=written, ts=ts, kills=observed
        )
        return delta

    def _ormap(self, op: _Op, obj: ORMap, spec: Spec, path: Path, top: bool) -> ORMap | None:
        # Nested maps are picked more often, so that histories reach deep keys.
        weighted = [f for f in spec.fields for _ in range(3 if f[1].kind is ORMap else 1)]
        key, sub = op.draw(st.sampled_from(weighted))
        observed = self.model.alive_under(op.rid, path, key)
        if op.draw(st.sampled_from(("update", "update", "update", "remove"))) == "remove":
            if observed:
                delta = obj.remove(key)
                self._record(op, path, "remove", issues_dot=False, elem=key, kills=observed)
                assert key not in obj
                return delta
            if top:
                before = obj.copy()
                with pytest.raises(KeyError):
                    obj.remove(key)
                assert obj == before
                return None
        held = {e.path[len(path)][1] for e in observed}
        if held and sub.kind not in held:  # the key holds other types here
            if top:
                before = obj.copy()
                with pytest.raises(TypeError):
                    obj.update(key, sub.kind, _never_called)
                assert obj == before
                return None
            options = [f for f in spec.fields if f[0] == key and f[1].kind in held]
            key, sub = op.draw(st.sampled_from(options))
        writes = op.draw(st.sampled_from((1, 1, 2)))
        nested_path = (*path, (key, sub.kind))

        def fn(nested: Any) -> Any:
            assert type(nested) is sub.kind
            assert not nested.is_delta
            delta = self._op(op, nested, sub, nested_path, top=False)
            for _ in range(writes - 1):  # several writes: join their deltas into a group
                delta.merge(self._op(op, nested, sub, nested_path, top=False))
            return delta

        return obj.update(key, sub.kind, fn)


def _never_called(nested: Any) -> Any:
    raise AssertionError("update must refuse a type the key does not hold before calling fn")


@st.composite
def worlds(
    draw: Draw[Any],
    spec: Spec | st.SearchStrategy[Spec] | None = None,
    *,
    min_replicas: int = 2,
    max_replicas: int = 4,
    max_steps: int = 20,
    snapshots: bool = False,
    check_every_step: bool = True,
    skews: st.SearchStrategy[int] = SKEWS,
) -> World:
    """A reachable world: random mutations, deliveries, merges and ticks on 2-4 replicas."""
    if spec is None:
        spec = specs()
    if isinstance(spec, st.SearchStrategy):
        spec = draw(spec)
    n = draw(st.integers(min_replicas, max_replicas))
    world = World(
        spec,
        {rid: draw(skews) for rid in RIDS[:n]},
        snapshots=snapshots,
        check_every_step=check_every_step,
    )
    for _ in range(draw(st.integers(1, max_steps))):
        world.random_step(draw)
    return world


def lattice_elements(world: World, *, deltas: bool) -> list[CRDT]:
    """States a world reached (and, with ``deltas``, its deltas too)."""
    pool = list(world.replicas.values())
    for snapshot in world.snapshots or ():
        pool += (snapshot.pre, snapshot.post)
    if deltas:
        pool += [sent.delta for sent in world.sent]
    return pool


# -- reads ---------------------------------------------------------------------------------


def check_reads(replica: CRDT, expect: Any) -> None:
    """Every read API agrees with ``value`` (already checked against ``expect``)."""
    if isinstance(replica, (GSet, ORSet)):
        assert len(replica) == len(expect)
        assert set(replica) == expect
        assert frozenset(replica.iter_elements()) == expect
        for element in ELEMENTS:
            assert (element in replica) == (element in expect)
        assert {"a": 1} not in replica  # unhashable: never an element
    elif isinstance(replica, LWWMap):
        assert len(replica) == len(expect)
        assert sorted(map(repr, replica)) == sorted(map(repr, expect))
        assert dict(replica.items()) == expect == dict(replica.iter_items())
        assert set(replica.keys()) == set(expect)
        for key in (*MAP_KEYS, *expect):
            assert (key in replica) == (key in expect)
            if key in expect:
                assert replica[key] == expect[key]
                assert replica.get(key, "dflt") == expect[key]
            else:
                assert replica.get(key) is None
                assert replica.get(key, "dflt") == "dflt"
                with pytest.raises(KeyError):
                    replica[key]
    elif isinstance(replica, ORMap):
        assert len(replica) == len(expect)
        assert set(replica.keys()) == set(expect)
        assert {key: nested.value for key, nested in replica.items()} == expect
        assert {key: nested.value for key, nested in replica.iter_items()} == expect
        for key in (*MAP_KEYS, *expect):
            assert (key in replica) == (key in expect)
            if key in expect:
                nested = replica.get(key)
                assert isinstance(nested, CRDT)
                assert nested.replica_id == replica.replica_id
                assert nested.value == expect[key]
                assert replica[key].value == expect[key]
            else:
                assert replica.get(key) is None
                with pytest.raises(KeyError):
                    replica[key]


def join_all(states: Iterable[CRDT]) -> CRDT:
    """A fresh copy of the first state with every other state merged in."""
    it = iter(states)
    out = next(it).copy()
    for state in it:
        out.merge(state)
    return out
