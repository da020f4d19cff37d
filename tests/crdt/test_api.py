"""The public contract of every CRDT type: construction, mutators, reads, merge, copy.

Every error case must leave the replica exactly as it was: same state (``==``
with a copy taken before), same value, same encoding and, for the clocked
types, the same clock position.
"""

from __future__ import annotations

import copy
import math
import pickle
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

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
from agentsync.crdt.values import MAX_MAP_DEPTH, MAX_REPLICA_ID_CHARS, MAX_STR_CHARS
from agentsync.errors import AgentsyncError, IntegerRangeError
from tests.crdt.codec_strategies import CLOCKED, INT64_MAX, INT64_MIN, FakeWall, canon

KINDS = pytest.mark.parametrize("kind", CRDT_TYPES, ids=lambda k: k.__name__)


def new(kind: type[CRDT], replica_id: str = "a") -> Any:
    if kind in CLOCKED:
        return kind(replica_id, clock=FakeWall())  # type: ignore[call-arg]
    return kind(replica_id)


def populated(kind: type[CRDT], replica_id: str = "a") -> Any:
    """A replica holding a little state (from two replicas), so changes would show."""
    replica = new(kind, replica_id)
    other = new(kind, "zed")
    for writer, salt in ((replica, "x"), (other, "y")):
        WRITE[kind](writer, salt)
    replica.merge(other)
    return replica


WRITE: dict[type[CRDT], Callable[[Any, str], Any]] = {
    GCounter: lambda x, s: x.increment(len(s) + 1),
    PNCounter: lambda x, s: x.decrement(len(s) + 2),
    GSet: lambda x, s: x.add(s),
    ORSet: lambda x, s: x.add(s),
    LWWRegister: lambda x, s: x.set([s, 1]),
    MVRegister: lambda x, s: x.set({"v": s}),
    EWFlag: lambda x, s: x.enable(),
    LWWMap: lambda x, s: x.set(s, [s]),
    ORMap: lambda x, s: x.update(
        s, ORMap, lambda m: m.update("n", GCounter, lambda c: c.increment())
    ),
}
"""One ordinary write per type, keyed by a salt string."""

CLOCKED_WRITE: dict[type[CRDT], Callable[[Any, str], Any]] = {
    LWWRegister: lambda x, s: x.set(s),
    LWWMap: lambda x, s: x.set(s, s),
    ORMap: lambda x, s: x.update(s, LWWRegister, lambda r: r.set(s)),
}
"""A write that reads the clock, per clocked type."""

EMPTY_VALUE = {
    GCounter: 0,
    PNCounter: 0,
    GSet: frozenset(),
    ORSet: frozenset(),
    LWWRegister: None,
    MVRegister: (),
    EWFlag: False,
    LWWMap: {},
    ORMap: {},
}


class Snapshot:
    """Everything observable about a replica, to prove an error changed nothing."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.copy = replica.copy()
        self.value = canon_value(replica)
        self.encoding = encode(replica)
        self.clock = replica.clock.last if isinstance(replica, CLOCKED) else None

    def assert_unchanged(self) -> None:
        replica = self.replica
        assert replica == self.copy
        assert canon_value(replica) == self.value
        assert encode(replica) == self.encoding
        if self.clock is not None:
            assert replica.clock.last == self.clock


def canon_value(replica: Any) -> str:
    return canon(replica.value)


def refuses(replica: Any, call: Callable[[], Any], error: type[BaseException]) -> None:
    """``call`` raises ``error`` and ``replica`` does not change."""
    snapshot = Snapshot(replica)
    with pytest.raises(error):
        call()
    snapshot.assert_unchanged()


# -- construction -------------------------------------------------------------------


@KINDS
def test_new_replica(kind: type[CRDT]) -> None:
    replica = kind("node-1")
    assert replica.replica_id == "node-1"
    assert not replica.is_delta
    assert replica.value == EMPTY_VALUE[kind]
    assert type(replica.value) is type(EMPTY_VALUE[kind])
    assert kind(replica_id="n").replica_id == "n"
    assert kind.__name__ in repr(replica)
    assert "node-1" in repr(replica)


@KINDS
@pytest.mark.parametrize("replica_id", ["x", "x" * MAX_REPLICA_ID_CHARS, "ü 🛰"], ids=len)
def test_replica_id_accepted(kind: type[CRDT], replica_id: str) -> None:
    assert kind(replica_id).replica_id == replica_id


@KINDS
@pytest.mark.parametrize("replica_id", [None, 1, 1.5, b"a", ["a"], ("a",), True], ids=repr)
def test_replica_id_must_be_a_str(kind: type[CRDT], replica_id: Any) -> None:
    with pytest.raises(TypeError):
        kind(replica_id)


@KINDS
@pytest.mark.parametrize("replica_id", ["", "x" * (MAX_REPLICA_ID_CHARS + 1)], ids=len)
def test_replica_id_must_have_1_to_256_chars(kind: type[CRDT], replica_id: str) -> None:
    with pytest.raises(ValueError, match="replica_id"):
        kind(replica_id)


@pytest.mark.parametrize("kind", CLOCKED, ids=lambda k: k.__name__)
def test_clocked_types_take_a_wall_clock(kind: type[CRDT]) -> None:
    wall = FakeWall(5_000)
    replica: Any = kind("a", clock=wall)  # type: ignore[call-arg]
    assert isinstance(replica.clock, HybridLogicalClock)
    CLOCKED_WRITE[kind](replica, "x")
    assert replica.clock.last == 5_000
    CLOCKED_WRITE[kind](replica, "y")  # the wall clock stood still
    assert replica.clock.last == 5_001


@pytest.mark.parametrize("kind", CLOCKED, ids=lambda k: k.__name__)
def test_clocked_types_share_a_hybrid_logical_clock(kind: type[CRDT]) -> None:
    hlc = HybridLogicalClock(FakeWall(7))
    first: Any = kind("a", clock=hlc)  # type: ignore[call-arg]
    second = LWWRegister("a", clock=hlc)
    assert first.clock is hlc
    assert second.clock is hlc
    CLOCKED_WRITE[kind](first, "x")
    second.set(1)
    assert hlc.last == 8  # the second write came after the first on the shared clock


@pytest.mark.parametrize("kind", CLOCKED, ids=lambda k: k.__name__)
@pytest.mark.parametrize("clock", [5, "now", None], ids=repr)
def test_clock_must_be_callable(kind: type[CRDT], clock: Any) -> None:
    with pytest.raises(TypeError):
        kind("a", clock=clock)  # type: ignore[call-arg]


# -- mutators return deltas -----------------------------------------------------------

MUTATORS: dict[str, tuple[type[CRDT], Callable[[Any], Any]]] = {
    "GCounter.increment()": (GCounter, lambda x: x.increment()),
    "GCounter.increment(5)": (GCounter, lambda x: x.increment(5)),
    "GCounter.increment(0)": (GCounter, lambda x: x.increment(0)),
    "PNCounter.increment()": (PNCounter, lambda x: x.increment()),
    "PNCounter.decrement(3)": (PNCounter, lambda x: x.decrement(3)),
    "GSet.add": (GSet, lambda x: x.add("new")),
    "GSet.add present": (GSet, lambda x: x.add("x")),
    "ORSet.add": (ORSet, lambda x: x.add("new")),
    "ORSet.add present": (ORSet, lambda x: x.add("x")),
    "ORSet.remove": (ORSet, lambda x: x.remove("x")),
    "ORSet.discard present": (ORSet, lambda x: x.discard("y")),
    "ORSet.discard absent": (ORSet, lambda x: x.discard("absent")),
    "ORSet.clear": (ORSet, lambda x: x.clear()),
    "LWWRegister.set": (LWWRegister, lambda x: x.set("new")),
    "MVRegister.set": (MVRegister, lambda x: x.set("new")),
    "EWFlag.enable": (EWFlag, lambda x: x.enable()),
    "EWFlag.disable": (EWFlag, lambda x: x.disable()),
    "LWWMap.set": (LWWMap, lambda x: x.set("new", 1)),
    "LWWMap.set existing": (LWWMap, lambda x: x.set("y", 2)),
    "LWWMap.remove": (LWWMap, lambda x: x.remove("x")),
    "LWWMap.discard present": (LWWMap, lambda x: x.discard("x")),
    "LWWMap.discard absent": (LWWMap, lambda x: x.discard("absent")),
    "ORMap.update new": (ORMap, lambda x: x.update("new", LWWRegister, lambda r: r.set(1))),
    "ORMap.update existing": (
        ORMap,
        lambda x: x.update("x", ORMap, lambda m: m.update("n", GCounter, lambda c: c.increment())),
    ),
    "ORMap.update noop": (ORMap, lambda x: x.update("new", GCounter, lambda c: c.increment(0))),
    "ORMap.remove": (ORMap, lambda x: x.remove("y")),
}


@pytest.mark.parametrize("kind, mutator", MUTATORS.values(), ids=MUTATORS.keys())
def test_mutators_return_a_delta_that_replays_the_change(
    kind: type[CRDT], mutator: Callable[[Any], Any]
) -> None:
    replica = populated(kind)
    peer = replica.copy()
    peer_id = new(kind, "peer")
    peer_id.merge(replica)
    delta = mutator(replica)
    assert type(delta) is kind
    assert delta.is_delta
    assert delta.replica_id == replica.replica_id
    peer.merge(delta)  # a peer that saw everything before the write catches up
    assert peer == replica
    peer_id.merge(delta)
    assert canon_value(peer_id) == canon_value(replica)


# -- counters -------------------------------------------------------------------------


def test_counters_count() -> None:
    g = GCounter("a")
    g.increment()
    g.increment(4)
    g.increment(0)
    assert g.value == 5
    assert type(g.value) is int
    p = PNCounter("a")
    p.increment()
    p.decrement()
    p.decrement()
    p.increment(10)
    p.decrement(3)
    assert p.value == 6
    other = PNCounter("b")
    other.decrement(9)
    p.merge(other)
    assert p.value == -3


def test_counter_extremes() -> None:
    g = GCounter("a")
    g.increment(INT64_MAX)
    assert g.value == INT64_MAX
    refuses(g, lambda: g.increment(1), IntegerRangeError)
    other = GCounter("b")
    other.increment(INT64_MAX)
    g.merge(other)
    assert g.value == 2 * INT64_MAX  # the sum is a Python int; each total fits int64
    p = PNCounter("a")
    p.decrement(INT64_MAX)
    p.decrement(1)
    assert p.value == INT64_MIN
    refuses(p, lambda: p.decrement(1), IntegerRangeError)
    p.increment(INT64_MAX)
    assert p.value == -1


COUNTER_STEPS = {
    "GCounter.increment": lambda x, n: x.increment(n),
    "PNCounter.increment": lambda x, n: x.increment(n),
    "PNCounter.decrement": lambda x, n: x.decrement(n),
}


@pytest.mark.parametrize("step", COUNTER_STEPS.values(), ids=COUNTER_STEPS.keys())
@pytest.mark.parametrize(
    "n, error",
    [
        (-1, ValueError),
        (-(2**70), ValueError),
        (True, TypeError),
        (False, TypeError),
        (1.0, TypeError),
        (0.0, TypeError),
        ("1", TypeError),
        (None, TypeError),
        ([1], TypeError),
        (2**63, IntegerRangeError),
    ],
    ids=repr,
)
def test_counter_steps_are_validated(
    step: Callable[[Any, Any], Any], n: Any, error: type[Exception]
) -> None:
    kind = GCounter if step is COUNTER_STEPS["GCounter.increment"] else PNCounter
    replica = populated(kind)
    refuses(replica, lambda: step(replica, n), error)


def test_integer_range_error_is_both_value_and_type_error() -> None:
    assert issubclass(IntegerRangeError, ValueError)
    assert issubclass(IntegerRangeError, TypeError)
    assert issubclass(IntegerRangeError, AgentsyncError)


# -- values -----------------------------------------------------------------------------

GOOD_VALUES = [
    None,
    True,
    False,
    0,
    INT64_MIN,
    INT64_MAX,
    1.5,
    -0.0,
    "",
    "ünï 🎉",
    b"\x00\xff",
    [],
    [1, [2, [None]]],
    (1, "a"),
    {"a": [1, {"b": b"x"}], "": None},
    MappingProxyType({"frozen": (1,)}),
    "x" * MAX_STR_CHARS,
]


def frozen(value: Any) -> Any:
    if type(value) in (list, tuple):
        return tuple(frozen(v) for v in value)
    if type(value) in (dict, MappingProxyType):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    return value


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


READ_BACK: dict[str, Callable[[Any], Any]] = {
    "LWWRegister.set": lambda v: _set(LWWRegister("a"), v).value,
    "MVRegister.set": lambda v: _set(MVRegister("a"), v).value[0],
    "LWWMap.set": lambda v: _lww_map_with(v)["k"],
    "ORMap nested register": lambda v: _ormap_with(v)["k"].value,
}


def _set(register: Any, value: Any) -> Any:
    register.set(value)
    return register


def _lww_map_with(value: Any) -> LWWMap:
    lww_map = LWWMap("a")
    lww_map.set("k", value)
    return lww_map


def _ormap_with(value: Any) -> ORMap:
    ormap = ORMap("a")
    ormap.update("k", LWWRegister, lambda r: r.set(value))
    return ormap


@pytest.mark.parametrize("read_back", READ_BACK.values(), ids=READ_BACK.keys())
@pytest.mark.parametrize("value", [*GOOD_VALUES, nested(32)], ids=lambda v: repr(v)[:30])
def test_values_are_accepted_and_frozen(read_back: Callable[[Any], Any], value: Any) -> None:
    assert canon(read_back(value)) == canon(frozen(value))


def test_values_do_not_share_the_callers_objects() -> None:
    value = {"list": [1, 2]}
    register = LWWRegister("a")
    register.set(value)
    value["list"].append(3)
    value["new"] = []
    assert register.value == {"list": (1, 2)}
    with pytest.raises(TypeError):
        register.value["x"] = 1  # type: ignore[index]


class Custom:
    pass


class MyInt(int):
    pass


class MyStr(str):
    __slots__ = ()


BAD_TYPES = [
    set(),
    frozenset({1}),
    object(),
    Custom(),
    bytearray(b"x"),
    memoryview(b"x"),
    1j,
    MyInt(1),
    MyStr("s"),
    range(3),
    Custom,
    {1: "a"},
    {b"a": 1},
    {"a": set()},
    [object()],
    (1, [2, {3}]),
    {"a": {"b": {None: 1}}},
]
BAD_VALUES = [
    math.nan,
    math.inf,
    -math.inf,
    [1.0, math.nan],
    {"a": (math.inf,)},
    nested(33),
    "x" * (MAX_STR_CHARS + 1),
    b"x" * (MAX_STR_CHARS + 1),
]
BAD_RANGES = [2**63, -(2**63) - 1, [2**64], {"a": (-(2**100),)}]

BAD_INPUTS = [
    *((v, TypeError) for v in BAD_TYPES),
    *((v, ValueError) for v in BAD_VALUES),
    *((v, IntegerRangeError) for v in BAD_RANGES),
]

VALUE_WRITES: dict[str, tuple[type[CRDT], Callable[[Any, Any], Any]]] = {
    "LWWRegister.set": (LWWRegister, lambda x, v: x.set(v)),
    "MVRegister.set": (MVRegister, lambda x, v: x.set(v)),
    "LWWMap.set value": (LWWMap, lambda x, v: x.set("x", v)),
    "ORMap nested set": (ORMap, lambda x, v: x.update("r", LWWRegister, lambda r: r.set(v))),
}

KEY_WRITES: dict[str, tuple[type[CRDT], Callable[[Any, Any], Any]]] = {
    "GSet.add": (GSet, lambda x, k: x.add(k)),
    "ORSet.add": (ORSet, lambda x, k: x.add(k)),
    "ORSet.remove": (ORSet, lambda x, k: x.remove(k)),
    "ORSet.discard": (ORSet, lambda x, k: x.discard(k)),
    "LWWMap.set key": (LWWMap, lambda x, k: x.set(k, 1)),
    "LWWMap.remove": (LWWMap, lambda x, k: x.remove(k)),
    "LWWMap.discard": (LWWMap, lambda x, k: x.discard(k)),
    "ORMap.update": (ORMap, lambda x, k: x.update(k, GCounter, lambda c: c.increment())),
    "ORMap.remove": (ORMap, lambda x, k: x.remove(k)),
}

UNHASHABLE_KEYS = [{}, {"a": 1}, [{"a": 1}], MappingProxyType({"a": 1}), ({"a": [1]},)]


def _ids(value: Any) -> str:
    """A stable id: a repr without the memory address some reprs carry."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))[:30]


@pytest.mark.parametrize("write", VALUE_WRITES.values(), ids=VALUE_WRITES.keys())
@pytest.mark.parametrize("value, error", BAD_INPUTS, ids=_ids)
def test_bad_values_are_refused_and_change_nothing(
    write: tuple[type[CRDT], Callable[[Any, Any], Any]], value: Any, error: type[Exception]
) -> None:
    kind, call = write
    replica = populated(kind)
    refuses(replica, lambda: call(replica, value), error)


@pytest.mark.parametrize("write", KEY_WRITES.values(), ids=KEY_WRITES.keys())
@pytest.mark.parametrize(
    "key, error",
    [*BAD_INPUTS, *((k, TypeError) for k in UNHASHABLE_KEYS)],
    ids=_ids,
)
def test_bad_keys_are_refused_and_change_nothing(
    write: tuple[type[CRDT], Callable[[Any, Any], Any]], key: Any, error: type[Exception]
) -> None:
    kind, call = write
    replica = populated(kind)
    refuses(replica, lambda: call(replica, key), error)


KEY_ADDS: dict[str, tuple[type[CRDT], Callable[[Any, Any], Any]]] = {
    name: KEY_WRITES[name] for name in ("GSet.add", "ORSet.add", "LWWMap.set key", "ORMap.update")
}
KEY_REMOVES: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "ORSet.remove": (KEY_WRITES["ORSet.add"][1], KEY_WRITES["ORSet.remove"][1]),
    "ORSet.discard": (KEY_WRITES["ORSet.add"][1], KEY_WRITES["ORSet.discard"][1]),
    "LWWMap.remove": (KEY_WRITES["LWWMap.set key"][1], KEY_WRITES["LWWMap.remove"][1]),
    "LWWMap.discard": (KEY_WRITES["LWWMap.set key"][1], KEY_WRITES["LWWMap.discard"][1]),
    "ORMap.remove": (KEY_WRITES["ORMap.update"][1], KEY_WRITES["ORMap.remove"][1]),
}
GOOD_KEYS = [None, True, 0, INT64_MIN, -0.5, "", "ключ", b"k", (), (1, (2.5, "x")), [1, [2]]]


@pytest.mark.parametrize("write", KEY_ADDS.values(), ids=KEY_ADDS.keys())
@pytest.mark.parametrize("key", GOOD_KEYS, ids=_ids)
def test_hashable_values_are_keys(
    write: tuple[type[CRDT], Callable[[Any, Any], Any]], key: Any
) -> None:
    kind, add = write
    replica = new(kind)
    assert add(replica, key).is_delta
    (stored,) = list(replica)
    assert canon(stored) == canon(frozen(key))
    assert frozen(key) in replica


@pytest.mark.parametrize("kind", [ORSet, LWWMap, ORMap], ids=lambda k: k.__name__)
@pytest.mark.parametrize("key", GOOD_KEYS, ids=_ids)
def test_removed_keys_are_absent(kind: type[CRDT], key: Any) -> None:
    for name, (add, remove) in KEY_REMOVES.items():
        if name.startswith(kind.__name__):
            replica = new(kind)
            add(replica, key)
            add(replica, "other")
            assert remove(replica, key).is_delta
            assert frozen(key) not in replica
            assert list(replica) == ["other"]


def test_deep_copies_and_pickles_of_a_removal_stay_removals() -> None:
    """A removed key's value is a singleton that reads test with ``is``."""
    replica = LWWMap("a", clock=FakeWall())
    replica.set("k", 1)
    replica.remove("k")
    for twin in (copy.deepcopy(replica), pickle.loads(pickle.dumps(replica))):
        assert twin == replica
        assert "k" not in twin
        assert decode(encode(twin)) == replica


# -- sets -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [GSet, ORSet], ids=lambda k: k.__name__)
def test_set_reads(kind: type[CRDT]) -> None:
    replica: Any = kind("a")
    replica.add("x")
    replica.add(2)
    replica.add([1, "t"])
    before = replica.copy()
    replica.add("x")  # present: the value stays, but a new dot supersedes the old
    assert replica.value == before.value
    assert replica != before  # so the re-add wins over a concurrent remove
    assert replica.value == frozenset({"x", 2, (1, "t")})
    assert type(replica.value) is frozenset
    assert len(replica) == 3
    assert sorted(map(repr, replica)) == sorted(map(repr, ["x", 2, (1, "t")]))
    assert "x" in replica
    assert (1, "t") in replica
    assert "y" not in replica
    assert {} not in replica  # unhashable: never an element
    for element in replica:  # iteration is over a snapshot
        replica.add(f"more-{element!r}")


def test_orset_remove_discard_clear() -> None:
    s = ORSet("a")
    for element in ("x", "y", "z"):
        s.add(element)
    s.remove("x")
    assert "x" not in s
    refuses(s, lambda: s.remove("x"), KeyError)
    with pytest.raises(KeyError) as caught:
        s.remove("absent")
    assert caught.value.args == ("absent",)
    before = s.copy()
    s.discard("absent")
    assert s == before
    s.discard("y")
    assert s.value == frozenset({"z"})
    delta = s.clear()
    assert s.value == frozenset()
    assert len(s) == 0
    other = ORSet("b")
    other.merge(before)
    other.merge(delta)
    assert other.value == frozenset({"y"})  # the discard of "y" was never sent


def test_orset_add_wins() -> None:
    a = ORSet("a")
    a.add("x")
    b = ORSet("b")
    b.merge(a)
    b.remove("x")
    a.add("x")  # concurrent with the remove
    a.merge(b)
    b.merge(a)
    assert a.value == b.value == frozenset({"x"})


# -- registers and flags ------------------------------------------------------------------


def test_lww_register_reads() -> None:
    register = LWWRegister("a", clock=FakeWall(10))
    assert register.value is None
    register.set("first")
    register.set([1, 2])
    assert register.value == (1, 2)
    register.set(None)
    assert register.value is None


def test_mv_register_shows_concurrent_values_in_a_deterministic_order() -> None:
    a, b, c = MVRegister("a"), MVRegister("b"), MVRegister("c")
    assert a.value == ()
    b.set("from b")
    a.set("from a")
    a.merge(b)
    c.merge(b)
    c.merge(a)
    b.merge(a)
    assert a.value == b.value == c.value == ("from a", "from b")
    assert type(a.value) is tuple
    c.set("resolved")
    a.merge(c)
    assert a.value == ("resolved",)


def test_mv_register_shows_equal_concurrent_values_once() -> None:
    a, b = MVRegister("a"), MVRegister("b")
    a.set([1])
    b.set((1,))
    a.merge(b)
    assert a.value == ((1,),)


def test_ewflag() -> None:
    a, b = EWFlag("a"), EWFlag("b")
    assert a.value is False
    a.enable()
    assert a.value is True
    b.merge(a)
    b.disable()
    a.enable()  # concurrent with the disable: enable wins
    a.merge(b)
    assert a.value is True
    a.disable()
    b.merge(a)
    assert a.value is False
    assert b.value is False


# -- LWWMap -------------------------------------------------------------------------------


def test_lww_map_reads() -> None:
    m = LWWMap("a", clock=FakeWall(10))
    m.set("a", 1)
    m.set("b", [2])
    m.set(3, {"c": None})
    m.set("gone", 0)
    m.remove("gone")
    assert m.value == {"a": 1, "b": (2,), 3: {"c": None}}
    assert type(m.value) is dict
    assert len(m) == 3
    assert sorted(map(repr, m)) == sorted(map(repr, ["a", "b", 3]))
    assert sorted(map(repr, m.keys())) == sorted(map(repr, ["a", "b", 3]))
    assert sorted(map(repr, m.items())) == sorted(map(repr, m.value.items()))
    assert m["a"] == 1
    assert m.get("b") == (2,)
    assert m.get("gone") is None
    assert m.get("gone", "d") == "d"
    assert m.get({}, "d") == "d"  # unhashable: never a key
    assert "a" in m
    assert "gone" not in m
    assert {} not in m
    with pytest.raises(KeyError):
        m["gone"]
    with pytest.raises(KeyError):
        m["never"]


def test_lww_map_remove_and_discard() -> None:
    m = LWWMap("a", clock=FakeWall(10))
    m.set("k", 1)
    m.remove("k")
    refuses(m, lambda: m.remove("k"), KeyError)
    refuses(m, lambda: m.remove("never"), KeyError)
    before = m.copy()
    delta = m.discard("k")
    assert m == before
    assert delta.is_delta
    m.set("k", 2)  # a set after a remove wins
    assert m["k"] == 2
    assert len(m) == 1


# -- ORMap --------------------------------------------------------------------------------


def test_ormap_reads() -> None:
    m = ORMap("a", clock=FakeWall(10))
    m.update("n", GCounter, lambda c: c.increment(2))
    m.update("s", ORSet, lambda s: s.add("x"))
    m.update("inner", ORMap, lambda i: i.update("r", LWWRegister, lambda r: r.set([1])))
    m.update(7, EWFlag, lambda f: f.enable())
    assert m.value == {"n": 2, "s": frozenset({"x"}), "inner": {"r": (1,)}, 7: True}
    assert type(m.value["inner"]) is dict
    assert len(m) == 4
    assert sorted(map(repr, m)) == sorted(map(repr, ["n", "s", "inner", 7]))
    assert sorted(map(repr, m.keys())) == sorted(map(repr, m.value))
    nested = m.get("n")
    assert type(nested) is GCounter
    assert nested.value == 2
    assert type(m["inner"]) is ORMap
    assert type(m["inner"]["r"]) is LWWRegister
    assert dict(m.items())["s"].value == frozenset({"x"})
    assert m.get("absent") is None
    assert m.get("absent", 0) == 0
    assert m.get({}, 0) == 0
    assert "n" in m
    assert "absent" not in m
    with pytest.raises(KeyError):
        m["absent"]


@pytest.mark.parametrize(
    "kind",
    [GCounter("x"), 1, "gc", "GCounter", None, CRDT, object, int],
    ids=repr,
)
def test_ormap_update_kind_must_be_a_crdt_class(kind: Any) -> None:
    m = populated(ORMap)
    refuses(m, lambda: m.update("new", kind, lambda c: c), TypeError)
    refuses(m, lambda: m.update("x", kind, lambda c: c), TypeError)


def test_ormap_update_kind_must_be_a_registered_class() -> None:
    class Sub(GCounter):
        __slots__ = ()

    m = populated(ORMap)
    refuses(m, lambda: m.update("new", Sub, lambda c: c.increment()), TypeError)


@pytest.mark.parametrize(
    "fn",
    [
        lambda c: None,
        lambda c: 5,
        lambda c: PNCounter("a").increment(),
        lambda c: GSet("a").add(1),
        encode,
    ],
    ids=["None", "int", "another type's delta", "GSet delta", "bytes"],
)
@pytest.mark.parametrize("key", ["new", "n"])
def test_ormap_update_fn_must_return_the_nested_delta(fn: Callable[[Any], Any], key: str) -> None:
    m = ORMap("a", clock=FakeWall(10))
    m.update("n", GCounter, lambda c: c.increment())
    refuses(m, lambda: m.update(key, GCounter, fn), TypeError)


@pytest.mark.parametrize("key", ["new", "n"])
def test_ormap_update_refused_fn_result_keeps_the_write_consistent(key: str) -> None:
    """Documented: fn's writes stay applied (undoing them would copy the nested
    store on every update); they stay consistent and reach peers by full state."""
    m = ORMap("a", clock=FakeWall(10))
    m.update("n", GCounter, lambda c: c.increment())
    before = m.value.get(key, 0)
    with pytest.raises(TypeError):
        m.update(key, GCounter, lambda c: (c.increment(), None)[1])
    assert m.value[key] == before + 1
    assert decode(encode(m)) == m
    peer = ORMap("b", clock=FakeWall(10))
    peer.merge(m)
    assert peer == m


def test_ormap_update_fn_returning_the_replica_is_refused() -> None:
    m = ORMap("a", clock=FakeWall(10))
    m.update("n", GCounter, lambda c: c.increment())
    refuses(m, lambda: m.update("n", GCounter, lambda c: c), TypeError)


def test_ormap_update_existing_key_as_another_type() -> None:
    m = ORMap("a", clock=FakeWall(10))
    m.update("k", GCounter, lambda c: c.increment())
    refuses(m, lambda: m.update("k", PNCounter, lambda c: c.increment()), TypeError)
    refuses(m, lambda: m.update("k", ORMap, lambda c: c), TypeError)


def test_ormap_remove() -> None:
    m = populated(ORMap)
    m.remove("x")
    assert "x" not in m
    refuses(m, lambda: m.remove("x"), KeyError)
    refuses(m, lambda: m.remove("never"), KeyError)
    m.update("x", GCounter, lambda c: c.increment(3))  # the key can come back as any type
    assert m["x"].value == 3


def test_ormap_update_wins_over_a_concurrent_remove() -> None:
    a = ORMap("a", clock=FakeWall(10))
    a.update("k", GCounter, lambda c: c.increment(2))
    b = ORMap("b", clock=FakeWall(10))
    b.merge(a)
    b.remove("k")
    a.update("k", GCounter, lambda c: c.increment(5))
    a.merge(b)
    b.merge(a)
    # the concurrent increment keeps the key, and (causal counter) its whole contribution
    assert a.value == b.value == {"k": 7}


def test_ormap_nesting_is_bounded() -> None:
    top = ORMap("a", clock=FakeWall(10))

    def descend(level: int) -> Callable[[ORMap], Any]:
        if level == MAX_MAP_DEPTH:
            return lambda m: m.update("leaf", ORMap, lambda c: c)
        return lambda m: m.update(f"k{level}", ORMap, descend(level + 1))

    # the map at depth 32 (counting the top as 1) cannot hold one more ORMap
    refuses(top, lambda: descend(1)(top), ValueError)
    ok = ORMap("a", clock=FakeWall(10))

    def fill(level: int) -> Callable[[ORMap], Any]:
        if level == MAX_MAP_DEPTH:
            return lambda m: m.update("leaf", GCounter, lambda c: c.increment())
        return lambda m: m.update(f"k{level}", ORMap, fill(level + 1))

    fill(1)(ok)
    node: Any = ok
    for level in range(1, MAX_MAP_DEPTH):
        node = node[f"k{level}"]
    assert node["leaf"].value == 1


# -- merge, equality, copy ----------------------------------------------------------------


@KINDS
def test_merge_is_in_place_and_converges(kind: type[CRDT]) -> None:
    a, b = populated(kind, "a"), new(kind, "b")
    delta = WRITE[kind](b, "b-only")
    assert a.merge(b) is None
    b.merge(a)
    assert a == b
    assert canon_value(a) == canon_value(b)
    c = new(kind, "c")
    c.merge(delta)
    c.merge(a)
    assert c == a
    a.merge(a)  # merging itself changes nothing
    assert a == b


@KINDS
def test_merge_refuses_another_type(kind: type[CRDT]) -> None:
    replica = populated(kind)
    for other_kind in CRDT_TYPES:
        if other_kind is not kind:
            other = populated(other_kind)
            refuses(replica, lambda o=other: replica.merge(o), TypeError)
    refuses(replica, lambda: replica.merge(None), TypeError)
    refuses(replica, lambda: replica.merge(encode(replica)), TypeError)


@KINDS
def test_equality_is_replicated_state_not_replica_id(kind: type[CRDT]) -> None:
    assert new(kind, "a") == new(kind, "b")
    a = populated(kind, "a")
    b = new(kind, "b")
    assert a != b
    b.merge(a)
    assert a == b
    assert a.replica_id != b.replica_id
    for other_kind in CRDT_TYPES:
        if other_kind is not kind:
            assert new(kind) != new(other_kind)
    assert a != a.value
    assert a != encode(a)
    with pytest.raises(TypeError):
        hash(a)


@KINDS
def test_copy_is_independent(kind: type[CRDT]) -> None:
    original = populated(kind)
    encoding = encode(original)
    twin = original.copy()
    assert twin == original
    assert twin.replica_id == original.replica_id
    assert type(twin) is kind
    WRITE[kind](twin, "twin")
    if kind is ORMap:
        twin.update("x", ORMap, lambda m: m.update("n", GCounter, lambda c: c.increment(9)))
    assert encode(original) == encoding
    assert twin != original
    twin_encoding = encode(twin)
    WRITE[kind](original, "orig")
    if kind is ORMap:
        original.update("y", ORMap, lambda m: m.remove("n"))
    assert encode(twin) == twin_encoding


@KINDS
def test_copy_of_a_delta_is_a_delta(kind: type[CRDT]) -> None:
    delta = WRITE[kind](new(kind), "x")
    twin = delta.copy()
    assert twin.is_delta
    assert twin == delta


def test_context_is_a_copy() -> None:
    g = GCounter("a")
    g.increment()
    context = g.context
    context.add(("a", 2))
    assert ("a", 2) not in g.context
    assert ("a", 1) in g.context


# -- deltas are not replicas ----------------------------------------------------------------

DELTA_WRITES: dict[str, tuple[type[CRDT], Callable[[Any], Any]]] = {
    "GCounter.increment": (GCounter, lambda d: d.increment()),
    "PNCounter.increment": (PNCounter, lambda d: d.increment(2)),
    "PNCounter.decrement": (PNCounter, lambda d: d.decrement()),
    "GSet.add": (GSet, lambda d: d.add("new")),
    "ORSet.add": (ORSet, lambda d: d.add("new")),
    "ORSet.remove": (ORSet, lambda d: d.remove("x")),
    "ORSet.discard": (ORSet, lambda d: d.discard("x")),
    "ORSet.clear": (ORSet, lambda d: d.clear()),
    "LWWRegister.set": (LWWRegister, lambda d: d.set(1)),
    "MVRegister.set": (MVRegister, lambda d: d.set(1)),
    "EWFlag.enable": (EWFlag, lambda d: d.enable()),
    "EWFlag.disable": (EWFlag, lambda d: d.disable()),
    "LWWMap.set": (LWWMap, lambda d: d.set("k", 2)),
    "LWWMap.remove": (LWWMap, lambda d: d.remove("x")),
    "LWWMap.discard": (LWWMap, lambda d: d.discard("x")),
    "ORMap.update": (ORMap, lambda d: d.update("x", ORMap, lambda m: m)),
    "ORMap.update new": (ORMap, lambda d: d.update("new", GCounter, lambda c: c.increment())),
    "ORMap.remove": (ORMap, lambda d: d.remove("x")),
}

NOOP_DELTA_WRITES: dict[str, tuple[type[CRDT], Callable[[Any], Any]]] = {
    "GCounter.increment(0)": (GCounter, lambda d: d.increment(0)),
    "PNCounter.decrement(0)": (PNCounter, lambda d: d.decrement(0)),
    "GSet.add present": (GSet, lambda d: d.add("x")),
    "ORSet.discard absent": (ORSet, lambda d: d.discard("absent")),
    "ORSet.remove absent": (ORSet, lambda d: d.remove("absent")),
    "LWWMap.discard absent": (LWWMap, lambda d: d.discard("absent")),
    "LWWMap.remove absent": (LWWMap, lambda d: d.remove("absent")),
}


@pytest.mark.parametrize("kind, write", DELTA_WRITES.values(), ids=DELTA_WRITES.keys())
def test_writing_to_a_delta_is_refused(kind: type[CRDT], write: Callable[[Any], Any]) -> None:
    replica = new(kind)
    delta = WRITE[kind](replica, "x")
    refuses(delta, lambda: write(delta), TypeError)
    group = delta.copy()
    group.merge(WRITE[kind](replica, "y"))
    assert group.is_delta
    refuses(group, lambda: write(group), TypeError)


@pytest.mark.parametrize("kind, write", NOOP_DELTA_WRITES.values(), ids=NOOP_DELTA_WRITES.keys())
def test_no_op_writes_to_a_delta_are_refused(kind: type[CRDT], write: Callable[[Any], Any]) -> None:
    delta = WRITE[kind](new(kind), "x")
    refuses(delta, lambda: write(delta), TypeError)


@KINDS
def test_a_delta_merged_with_a_full_state_becomes_a_state(kind: type[CRDT]) -> None:
    a = populated(kind)
    delta = WRITE[kind](a, "more")
    group = delta.copy()
    group.merge(a)
    assert not group.is_delta
    assert canon_value(group) == canon_value(a)


# -- deltas that remove, and reads on deltas ------------------------------------------------


def _remove_cases() -> dict[str, tuple[Any, Callable[[Any], Any]]]:
    s = ORSet("a")
    s.add("x")
    s.add("y")
    lww_map = LWWMap("a", clock=FakeWall(10))
    lww_map.set("x", 1)
    lww_map.set("y", 2)
    ormap = ORMap("a", clock=FakeWall(10))
    ormap.update("x", LWWMap, lambda m: m.set("f", 1))
    ormap.update("y", ORSet, lambda s: s.add(1))
    nested = ORMap("a", clock=FakeWall(10))
    nested.update("o", ORMap, lambda m: m.update("x", ORSet, lambda s: s.add(1)))
    nested.update("o", ORMap, lambda m: m.update("y", EWFlag, lambda f: f.enable()))
    return {
        "ORSet.remove": (s, lambda x: x.remove("x")),
        "ORSet.clear": (s, lambda x: x.clear()),
        "LWWMap.remove": (lww_map, lambda x: x.remove("x")),
        "ORMap.remove": (ormap, lambda x: x.remove("x")),
        "nested ORMap.remove": (
            nested,
            lambda x: x.update("o", ORMap, lambda m: m.remove("x")),
        ),
    }


@pytest.mark.parametrize("name", list(_remove_cases()))
def test_remove_deltas_read_and_merge_like_states(name: str) -> None:
    replica, remove = _remove_cases()[name]
    before = replica.copy()
    add = WRITE[type(replica)](replica, "z")
    delta = remove(replica)
    assert len(delta) == len(list(delta)) == len(delta.value)
    assert all(key in delta for key in delta)
    group = add.copy()
    group.merge(delta)  # a delta group that holds removal markers
    assert group.is_delta
    assert len(group) == len(list(group))
    state = group.copy()
    state.merge(before)  # merging a full state turns the group into a state
    assert not state.is_delta
    assert canon_value(state) == canon_value(replica)
    assert len(state) == len(list(state)) == len(replica)
    for target in (before.copy(), new(type(replica), "b")):
        target.merge(before)
        target.merge(group)
        assert canon_value(target) == canon_value(replica)


def test_emptying_one_of_two_concurrent_types_keeps_the_other() -> None:
    a = ORMap("a", clock=FakeWall(10))
    b = ORMap("b", clock=FakeWall(10))
    a.update("k", ORSet, lambda s: s.add(1))
    b.update("k", EWFlag, lambda f: f.enable())
    a.merge(b)
    assert type(a["k"]) is ORSet  # ORSet comes before EWFlag in CRDT_TYPES
    a.update("k", ORSet, lambda s: s.remove(1))
    assert type(a["k"]) is EWFlag
    assert a.value == {"k": True}
    a.update("k", EWFlag, lambda f: f.disable())
    assert "k" not in a
    assert len(a) == 0


@pytest.mark.parametrize("kind", [ORSet, ORMap, EWFlag], ids=lambda k: k.__name__)
def test_every_change_shows_in_the_context(kind: type[CRDT]) -> None:
    a = new(kind, "a")
    WRITE[kind](a, "x")
    before = a.context
    if kind is EWFlag:
        a.disable()
    else:
        a.remove("x")
    assert a.context != before  # a remove issues a dot of its own, stored nowhere
    assert before <= a.context


def test_equal_contexts_with_different_stores_differ() -> None:
    # Only out-of-order delivery gets here: b misses c's first re-add of x,
    # whose context would have dropped a's dot.
    a, b, c, d = ORSet("a"), ORSet("b"), ORSet("c"), ORSet("d")
    first = a.add("x")
    for replica in (b, c, d):
        replica.merge(first)
    d.merge(c.add("x"))
    second = c.add("x")
    b.merge(second)
    d.merge(second)
    assert b.context == d.context
    assert b != d


@KINDS
def test_equal_states_built_in_different_orders_are_equal(kind: type[CRDT]) -> None:
    a = new(kind, "a")
    delta = WRITE[kind](a, "x")
    b = new(kind, "b")
    WRITE[kind](b, "y")
    via_delta = delta.copy()
    via_delta.merge(b)
    assert not via_delta.is_delta
    via_state = b.copy()
    via_state.merge(delta)
    assert canon_value(via_delta) == canon_value(via_state)
    assert via_delta == via_state
