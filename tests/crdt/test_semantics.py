"""What each type's value is, sequentially and under concurrency (riak_dt style).

Two kinds of tests:

* property tests: random histories on 2-4 replicas (mutations, deltas
  delivered in any order or grouped, full merges, clock ticks) where every
  replica, after every step, reads what the reference model of
  ``strategies.py`` says (sum, add-wins, enable-wins, last-writer-wins by HLC,
  multi-value by dot, update-wins maps with reset-remove);
* small scenarios that pin each rule of the specification down by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import (
    CRDT,
    CRDT_TYPES,
    ClockSkewError,
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
from tests.crdt.strategies import (
    ELEMENTS,
    MAP_KEYS,
    MAX_SKEW_NS,
    NAMED_SPECS,
    RIDS,
    TICKS,
    SimTime,
    deep_frozen,
    examples,
    expected,
    join_all,
    make,
    specs,
    values,
    worlds,
)

SECOND = 10**9


def sync(*replicas: CRDT) -> None:
    """Full-state anti-entropy until every replica has seen every other."""
    for dst in replicas:
        for src in replicas:
            dst.merge(src)
    for dst in replicas:
        for src in replicas:
            dst.merge(src)


def twins(kind: type[CRDT], n: int = 2, skews: tuple[int, ...] = ()) -> tuple[SimTime, list[Any]]:
    """``n`` replicas ("a", "b", ...) of ``kind`` on one simulated time, skewed."""
    time = SimTime()
    skews = skews or (0,) * n
    return time, [make(kind, rid, time.clock(skew)) for rid, skew in zip(RIDS, skews, strict=False)]


# -- the model, on random histories ----------------------------------------------------


@pytest.mark.parametrize("name", list(NAMED_SPECS))
@settings(max_examples=examples(60))
@given(data=st.data())
def test_every_replica_reads_what_the_model_says(name: str, data: st.DataObject) -> None:
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=30))  # checks after every step
    world.deliver_all(data.draw(st.permutations(range(len(world.sent)))))
    world.check_all()


@settings(max_examples=examples(200))
@given(data=st.data())
def test_random_specs_read_what_the_model_says(data: st.DataObject) -> None:
    world = data.draw(worlds(specs(), max_steps=30))
    world.deliver_all()
    world.check_all()


@settings(max_examples=examples(100))
@given(data=st.data())
def test_delta_groups_read_what_the_model_says(data: st.DataObject) -> None:
    """Groups of buffered deltas, joined in any order, delivered as one."""
    world = data.draw(worlds(specs(), max_steps=15))
    for _ in range(data.draw(st.integers(1, 5))):
        if not world.sent:
            break
        group = data.draw(st.lists(st.integers(0, len(world.sent) - 1), min_size=1, max_size=6))
        world.deliver_group(group, data.draw(st.sampled_from(world.rids)))
        world.random_step(data.draw)


# -- counters -------------------------------------------------------------------------------


@settings(max_examples=examples(100))
@given(
    kind=st.sampled_from([GCounter, PNCounter]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["inc", "dec", "merge"]),
            st.sampled_from(RIDS[:3]),
            st.sampled_from(RIDS[:3]),
            st.integers(0, 10**12),
        ),
        max_size=30,
    ),
)
def test_counters_sum_every_increment(kind: type[CRDT], steps: list[Any]) -> None:
    _, replicas = twins(kind, 3)
    by_id = {r.replica_id: r for r in replicas}
    amounts: dict[int, int] = {}  # step -> the amount it added
    seen: dict[str, set[int]] = {rid: set() for rid in by_id}  # the steps each replica knows
    for i, (op, rid, other, n) in enumerate(steps):
        replica = by_id[rid]
        if op == "merge":  # full states only: what a replica knows stays causally closed
            replica.merge(by_id[other])
            seen[rid] |= seen[other]
        elif op == "dec" and kind is PNCounter:
            replica.decrement(n)
            amounts[i] = -n
            seen[rid].add(i)
        else:
            replica.increment(n)
            amounts[i] = n
            seen[rid].add(i)
        assert replica.value == sum(amounts[j] for j in seen[rid])
    sync(*replicas)
    for replica in replicas:
        assert replica.value == sum(amounts.values())


def test_counter_value_is_the_sum_of_known_steps() -> None:
    _, (a, b) = twins(PNCounter)
    a.increment(5)
    b.decrement(2)
    b.increment()
    assert (a.value, b.value) == (5, -1)
    a.merge(b)
    assert a.value == 4
    b.merge(a)
    b.merge(a)
    assert b.value == 4


@pytest.mark.parametrize("kind", [GCounter, PNCounter])
def test_counter_steps_are_validated(kind: type[Any]) -> None:
    counter = kind("a")
    counter.increment(3)
    before = counter.copy()
    delta = counter.increment(0)
    assert delta.is_delta and delta.value == 0
    for bad, error in [(-1, ValueError), (True, TypeError), (1.0, TypeError), (2**63, ValueError)]:
        with pytest.raises(error):
            counter.increment(bad)
        assert counter == before
    big = kind("b")
    big.increment(2**63 - 1)
    with pytest.raises(ValueError):  # a replica's total stays within int64
        big.increment(1)
    assert big.value == 2**63 - 1


def test_pncounter_floor_is_int64() -> None:
    counter = PNCounter("a")
    counter.decrement(2**63 - 1)
    counter.decrement(1)
    with pytest.raises(ValueError):
        counter.decrement(1)
    assert counter.value == -(2**63)


# -- sets ----------------------------------------------------------------------------------


def test_orset_concurrent_add_and_remove_add_wins() -> None:
    _, (a, b) = twins(ORSet)
    a.add("x")
    sync(a, b)
    b.remove("x")  # observed a's add
    a.add("x")  # concurrently: a new add the remove did not observe
    sync(a, b)
    assert a.value == b.value == frozenset({"x"})


def test_orset_concurrent_adds_then_remove_of_one_observed() -> None:
    _, (a, b, c) = twins(ORSet, 3)
    a.add("x")
    sync(a, c)
    c.remove("x")  # observed a's add only
    b.add("x")  # concurrent, unobserved
    sync(a, b, c)
    assert a.value == frozenset({"x"})
    c.remove("x")  # now observed every add
    sync(a, b, c)
    assert "x" not in a and "x" not in b and a.value == frozenset()


def test_orset_remove_of_observed_adds_wins() -> None:
    _, (a, b) = twins(ORSet)
    delta = a.add(1)
    b.merge(delta)
    removal = b.remove(1)
    a.merge(removal)
    assert a.value == b.value == frozenset()
    a.merge(delta)  # a stale duplicate does not resurrect it
    assert 1 not in a


def test_orset_remove_absent_and_discard() -> None:
    s = ORSet("a")
    s.add(1)
    before = s.copy()
    with pytest.raises(KeyError):
        s.remove(2)
    assert s == before
    delta = s.discard(2)
    assert delta.is_delta and delta.value == frozenset()
    other = ORSet("b")
    other.merge(delta)
    assert other.value == frozenset()
    s.discard(1)
    assert s.value == frozenset()


def test_orset_clear_removes_what_it_observed() -> None:
    _, (a, b) = twins(ORSet)
    for element in (1, 2, 3):
        a.add(element)
    sync(a, b)
    cleared = b.clear()
    a.add(4)  # concurrent with the clear
    a.add(2)  # a re-add is concurrent too: it survives
    a.merge(cleared)
    b.merge(a)
    assert a.value == b.value == frozenset({2, 4})


@pytest.mark.parametrize("kind", [ORSet, GSet])
@settings(max_examples=examples(100))
@given(
    before=st.lists(st.sampled_from(ELEMENTS), max_size=4),
    elements=st.lists(st.sampled_from(ELEMENTS), max_size=8),
)
def test_add_all_is_the_adds_of_the_distinct_elements_in_order(
    kind: type[ORSet | GSet], before: list[Any], elements: list[Any]
) -> None:
    bulk, one_by_one = kind("a"), kind("a")
    for element in before:
        bulk.add(element)
        one_by_one.add(element)
    delta = bulk.add_all(elements)
    deltas = [one_by_one.add(element) for element in dict.fromkeys(elements)]
    assert bulk == one_by_one  # the same dots, the same state
    if deltas:
        assert delta == join_all(deltas)
    assert delta.value == frozenset(elements)
    elsewhere = kind("b")
    elsewhere.merge(delta)
    assert elsewhere.value == frozenset(elements)


def test_add_all_checks_every_element_before_adding_any() -> None:
    s = ORSet("a")
    s.add("kept")
    before = s.copy()
    with pytest.raises(TypeError, match="hashable"):
        s.add_all(["new", {"a": 1}])
    for text in ("abc", b"abc", bytearray(b"abc")):
        with pytest.raises(TypeError, match="use add"):
            s.add_all(text)  # would add its characters
    assert s == before
    assert s.add_all(()).value == frozenset() and s == before  # an empty delta, no dot
    assert s.add_all(x for x in ["g"]).value == frozenset({"g"})  # any iterable, read once


@settings(max_examples=examples(100))
@given(data=st.data())
def test_gset_only_grows(data: st.DataObject) -> None:
    world = data.draw(worlds(NAMED_SPECS["GSet"], max_steps=1, check_every_step=False))
    seen = {rid: world.replicas[rid].value for rid in world.rids}
    for _ in range(data.draw(st.integers(1, 30))):
        world.random_step(data.draw)
        for rid in world.rids:
            now = world.replicas[rid].value
            assert now >= seen[rid]
            seen[rid] = now
    world.deliver_all()
    added = frozenset(e.elem for e in world.model.events)
    for replica in world.replicas.values():
        assert replica.value == added  # the union of every add


def test_gset_re_add_keeps_the_value() -> None:
    s = GSet("a")
    s.add("x")
    delta = s.add("x")  # a new dot (see the ORMap update-wins test), the same value
    assert delta.is_delta and delta.value == frozenset({"x"})
    assert s.value == frozenset({"x"}) and len(s) == 1
    with pytest.raises(AttributeError):
        s.remove  # noqa: B018  # a grow-only set has no remove


# -- the enable-wins flag ------------------------------------------------------------------------


def test_ewflag_concurrent_enable_wins() -> None:
    _, (a, b) = twins(EWFlag)
    a.enable()
    sync(a, b)
    b.disable()
    a.enable()  # concurrent with the disable
    sync(a, b)
    assert a.value is True and b.value is True


def test_ewflag_disable_that_observed_every_enable_wins() -> None:
    _, (a, b, c) = twins(EWFlag, 3)
    a.enable()
    b.enable()
    sync(a, b, c)
    c.disable()
    sync(a, b, c)
    assert not a.value and not b.value and not c.value
    a.disable()  # concurrent disables are fine
    b.disable()
    sync(a, b, c)
    assert a.value is False
    assert EWFlag("z").value is False


def test_ewflag_enable_after_disable_wins() -> None:
    _, (a, b) = twins(EWFlag)
    a.enable()
    a.disable()
    d = a.enable()
    b.merge(d)
    assert b.value is True


# -- last-writer-wins ------------------------------------------------------------------------


def test_lww_register_latest_timestamp_wins() -> None:
    time, (a, b) = twins(LWWRegister)
    assert a.value is None
    a.set("first")
    time.advance(SECOND)
    b.set("second")  # concurrent, but later by the clocks
    sync(a, b)
    assert a.value == b.value == "second"


def test_lww_register_ties_break_by_replica_id() -> None:
    _, (a, b) = twins(LWWRegister)  # same wall clock, time stands still
    a.set("from a")
    b.set("from b")
    assert a.clock.last == b.clock.last  # the same timestamp
    sync(a, b)
    assert a.value == b.value == "from b"  # "b" > "a"


def test_lww_register_write_after_merge_wins_with_a_clock_behind() -> None:
    _, (a, b) = twins(LWWRegister, skews=(10 * SECOND, 0))  # b is 10 s behind
    a.set("ahead")
    b.merge(a)
    b.set("later")  # b's wall clock is behind a's timestamp: the HLC moves past it
    assert b.clock.last > a.clock.last
    sync(a, b)
    assert a.value == b.value == "later"
    # Without the merge, b's concurrent write would have lost to a's clock.
    _, (c, d) = twins(LWWRegister, skews=(10 * SECOND, 0))
    c.set("ahead")
    d.set("behind")
    sync(c, d)
    assert c.value == "ahead"


def test_lww_register_a_shared_clock_orders_writes() -> None:
    time = SimTime()
    hlc = HybridLogicalClock(time.clock())
    one, two = LWWRegister("a", clock=hlc), LWWRegister("b", clock=hlc)
    assert one.clock is hlc and two.clock is hlc
    one.set(1)
    first = hlc.last
    two.set(2)  # same wall time: the shared HLC still moves forward
    assert hlc.last == first + 1


@settings(max_examples=examples(100))
@given(value=values())
def test_values_read_back_frozen(value: Any) -> None:
    time = SimTime()
    r = LWWRegister("a", clock=time.clock())
    m = MVRegister("a")
    lm = LWWMap("a", clock=time.clock())
    r.set(value)
    m.set(value)
    lm.set("k", value)
    for read in (r.value, m.value[0], lm["k"], lm.value["k"]):
        assert read == expected(value)
        assert deep_frozen(read)
    if isinstance(value, dict):
        assert type(r.value) is MappingProxyType
        with pytest.raises(TypeError):
            r.value["new"] = 1  # type: ignore[index]
    if isinstance(value, list):
        assert type(r.value) is tuple
    assert decode(encode(r)).value == expected(value)


BAD_VALUES = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "2**63": 2**63,
    "-2**63-1": -(2**63) - 1,
    "int-key": {1: 2},
    "nested-int-key": {"k": {3: 4}},
    "set": {1, 2},
    "object": object(),
    "nested-nan": [1, [math.nan]],
    "frozenset": frozenset(),
}


@pytest.mark.parametrize("bad", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_values_outside_the_domain_are_refused(bad: Any) -> None:
    time = SimTime()
    r = LWWRegister("a", clock=time.clock())
    r.set("kept")
    lm = LWWMap("a", clock=time.clock())
    lm.set("k", "kept")
    mv = MVRegister("a")
    states = [r, lm, mv]
    befores = [s.copy() for s in states]
    for write in (lambda: r.set(bad), lambda: lm.set("k", bad), lambda: mv.set(bad)):
        with pytest.raises((TypeError, ValueError)):
            write()
    for state, before in zip(states, befores, strict=True):
        assert state == before
    assert r.value == "kept" and lm["k"] == "kept"


@pytest.mark.parametrize("kind", [ORSet, GSet])
def test_unhashable_elements_are_refused(kind: type[Any]) -> None:
    s = kind("a")
    for bad in ({"a": 1}, math.nan, 2**64):
        with pytest.raises((TypeError, ValueError)):
            s.add(bad)
    assert s.value == frozenset()
    s.add([1, (2, "x")])  # a list element is stored as a tuple
    assert (1, (2, "x")) in s


def test_lwwmap_last_writer_wins_per_key() -> None:
    time, (a, b) = twins(LWWMap)
    a.set("k", 1)
    a.set("j", "a")
    time.advance(1)
    b.set("k", 2)
    sync(a, b)
    assert a.value == b.value == {"k": 2, "j": "a"}
    assert a["k"] == 2 and a.get("j") == "a" and a.get("zz", 0) == 0
    assert sorted(a.keys()) == ["j", "k"] and len(a) == 2


def test_lwwmap_later_remove_beats_earlier_concurrent_set() -> None:
    time, (a, b) = twins(LWWMap)
    a.set("k", 0)
    sync(a, b)
    a.set("k", 1)  # earlier
    time.advance(SECOND)
    b.remove("k")  # later, concurrent: it did not see a's set
    sync(a, b)
    assert "k" not in a and "k" not in b and a.value == {}


def test_lwwmap_later_set_beats_earlier_concurrent_remove() -> None:
    time, (a, b) = twins(LWWMap)
    a.set("k", 0)
    sync(a, b)
    b.remove("k")  # earlier
    time.advance(SECOND)
    a.set("k", 1)  # later, concurrent
    sync(a, b)
    assert a.value == b.value == {"k": 1}


def test_lwwmap_remove_ties_break_by_replica_id() -> None:
    _, (a, b) = twins(LWWMap)
    a.set("k", 0)
    sync(a, b)
    b.set("k", "b")
    a.remove("k")
    assert a.clock.last == b.clock.last
    sync(a, b)
    assert a.value == b.value == {"k": "b"}  # "b" > "a": b's set wins the tie
    c, d = LWWMap("c", clock=SimTime().clock()), LWWMap("d", clock=SimTime().clock())
    c.set("k", 0)
    sync(c, d)
    c.set("k", "c")
    d.remove("k")
    sync(c, d)
    assert c.value == d.value == {}  # "d" > "c": d's remove wins


def test_lwwmap_remove_after_merge_wins_with_a_clock_behind() -> None:
    _, (a, b) = twins(LWWMap, skews=(20 * SECOND, 0))
    a.set("k", "ahead")
    b.merge(a)
    b.remove("k")
    sync(a, b)
    assert "k" not in a
    b.set("k", "back")
    sync(a, b)
    assert a["k"] == "back"


def test_lwwmap_remove_absent_and_discard() -> None:
    _, (a,) = twins(LWWMap, 1)
    with pytest.raises(KeyError):
        a.remove("k")
    a.set("k", 1)
    a.remove("k")
    before = a.copy()
    with pytest.raises(KeyError):
        a.remove("k")  # removed already
    assert a == before
    delta = a.discard("k")
    assert delta.is_delta and a == before
    with pytest.raises(KeyError):
        a["k"]
    assert a.get("k") is None and len(a) == 0 and list(a) == []


_MAP_ITEMS = st.lists(st.tuples(st.sampled_from(MAP_KEYS), values(max_leaves=3)), max_size=6)
"""(key, value) pairs for an LWWMap, repeated keys often."""


@settings(max_examples=examples(100))
@given(
    before=st.lists(st.tuples(st.sampled_from(MAP_KEYS), st.none() | st.integers(0, 3))),
    tick=TICKS,
    items=_MAP_ITEMS,
    as_mapping=st.booleans(),
)
def test_lwwmap_set_all_is_the_sets_of_the_items_in_order(
    before: list[tuple[Any, int | None]], tick: int, items: list[tuple[Any, Any]], as_mapping: bool
) -> None:
    time = SimTime()
    bulk, one_by_one = LWWMap("a", clock=time.clock()), LWWMap("a", clock=time.clock())
    for key, value in before:  # None: a remove, which leaves a tombstone to write over
        for m in (bulk, one_by_one):
            m.discard(key) if value is None else m.set(key, value)
    time.advance(tick)  # 0: the wall clock is behind the HLC, which counts on by one
    peer = LWWMap("b", clock=time.clock())
    peer.merge(bulk)  # a peer that has seen everything before
    last = bulk.clock.last
    given_items: Any = dict(items) if as_mapping else iter(items)  # any iterable, read once
    pairs = list(dict(items).items()) if as_mapping else items
    delta = bulk.set_all(given_items)
    deltas = [one_by_one.set(key, value) for key, value in pairs]
    assert bulk == one_by_one  # the same dots, HLC timestamps and tombstones
    assert bulk.clock.last == one_by_one.clock.last
    written = {key: expected(value) for key, value in pairs}  # the last value of a repeated key
    if deltas:
        assert delta == join_all(deltas)
    else:
        assert delta.is_delta and not delta.context and bulk.clock.last == last  # nothing issued
    assert delta.value == written
    elsewhere = LWWMap("c", clock=time.clock())
    elsewhere.merge(delta)
    assert elsewhere.value == written
    peer.merge(delta)
    assert peer.value == bulk.value


def test_lwwmap_set_all_checks_every_item_before_writing_any() -> None:
    _, (m,) = twins(LWWMap, 1)
    m.set("kept", 1)
    m.remove("kept")  # a tombstone too
    m.set("k", "v")
    before, last = m.copy(), m.clock.last
    refused: list[tuple[object, type[Exception], str]] = [
        ([("new", 1), ({"a": 1}, 2)], TypeError, "hashable"),  # a bad key, after a good item
        ({"new": 1, "bad": object()}, TypeError, "unsupported value"),
        ([("new", 1), ("nan", math.nan)], ValueError, "finite"),
        ([("new", 1), ("big", 1 << 64)], ValueError, "64 bits"),
        (5, TypeError, "pairs, not a int"),  # not iterable
        (None, TypeError, "pairs, not a NoneType"),
        ("ab", TypeError, "pairs, not a str"),  # not split into characters
        (b"ab", TypeError, "pairs, not a bytes"),
        ([("new", 1), "ab"], TypeError, "#1 is not a"),  # a str is no pair
        ([("new", 1), ("a", 1, 2)], TypeError, "#1 is not a"),
        ([("new",)], TypeError, "#0 is not a"),
        ([("new", 1), 7], TypeError, "#1 is not a"),
        ([{"k": 1}], TypeError, "#0 is not a"),
    ]
    for items, error, message in refused:
        with pytest.raises(error, match=message):
            m.set_all(items)  # type: ignore[arg-type]
        assert m == before and m.clock.last == last, items  # nothing written, no dot, no tick
    assert not m.set_all([]).context and not m.set_all({}).context and m == before
    delta = m.set_all([["list", [1, {"a": [2]}]], (("t", 2), "x")])  # lists as pairs; frozen
    assert m["list"] == (1, {"a": (2,)}) and deep_frozen(m["list"]) and m[("t", 2)] == "x"
    with pytest.raises(TypeError, match="delta"):
        delta.set_all({"k": 1})


# -- the multi-value register -------------------------------------------------------------------


def test_mvregister_keeps_concurrent_values_in_dot_order() -> None:
    z, a, m = MVRegister("z"), MVRegister("a"), MVRegister("m")
    z.set("from z")  # written first, but ordered by replica id
    a.set("from a")
    m.set(["from", "m"])
    sync(z, a, m)
    assert z.value == a.value == m.value == ("from a", ("from", "m"), "from z")
    assert MVRegister("q").value == ()


def test_mvregister_shows_equal_values_once() -> None:
    a, b, c = MVRegister("a"), MVRegister("b"), MVRegister("c")
    a.set(1)
    b.set("x")
    c.set(1)
    sync(a, b, c)
    assert a.value == (1, "x")


def test_mvregister_write_after_merge_supersedes_all() -> None:
    a, b, c = MVRegister("a"), MVRegister("b"), MVRegister("c")
    a.set(1)
    b.set(2)
    c.merge(a)
    c.merge(b)
    assert c.value == (1, 2)
    c.set(3)
    sync(a, b, c)
    assert a.value == b.value == c.value == (3,)


# -- the OR-map ------------------------------------------------------------------------------


def adder(element: Any) -> Callable[[ORSet], ORSet]:
    return lambda s: s.add(element)


def test_ormap_concurrent_update_beats_remove() -> None:
    _, (a, b) = twins(ORMap)
    a.update("k", ORSet, adder("x"))
    sync(a, b)
    b.remove("k")  # observed x
    a.update("k", ORSet, adder("y"))  # concurrent update
    sync(a, b)
    assert a.value == b.value == {"k": frozenset({"y"})}  # observed x is reset


def test_ormap_concurrent_gset_update_beats_remove() -> None:
    _, (a, b) = twins(ORMap)
    a.update("k", GSet, lambda s: s.add("x"))
    sync(a, b)
    removal = b.remove("k")
    update = a.update("k", GSet, lambda s: s.add("x"))  # concurrent update of the key
    a.merge(removal)
    b.merge(update)
    assert a.value == b.value == {"k": frozenset({"x"})}


def test_ormap_remove_observed_everything_removes_the_key() -> None:
    _, (a, b) = twins(ORMap)
    a.update("k", ORSet, adder("x"))
    a.update("j", GCounter, lambda c: c.increment(2))
    sync(a, b)
    removal = b.remove("k")
    a.merge(removal)
    assert "k" not in a and a.value == {"j": 2}
    with pytest.raises(KeyError):
        a.remove("k")
    with pytest.raises(KeyError):
        a["k"]
    assert a.get("k") is None and a.get("k", 5) == 5


def test_ormap_remove_resets_a_nested_counter_emcntr_style() -> None:
    """A contribution the remove observed is reset; a concurrent incrementer keeps all of it."""
    _, (a, b, c) = twins(ORMap, 3)
    a.update("n", PNCounter, lambda n: n.increment(5))
    b.update("n", PNCounter, lambda n: n.increment(3))
    c.update("n", PNCounter, lambda n: n.decrement(1))
    sync(a, b, c)
    assert a["n"].value == 7
    removal = c.remove("n")  # observed 5 (a) + 3 (b) - 1 (c)
    a.update("n", PNCounter, lambda n: n.increment(2))  # concurrent: a's whole 7 survives
    for r in (a, b):
        r.merge(removal)
    sync(a, b, c)
    assert a.value == b.value == c.value == {"n": 7}
    c.update("n", PNCounter, lambda n: n.increment(1))  # c starts again from 0
    sync(a, b, c)
    assert a["n"].value == 8


def test_ormap_remove_then_recreate_starts_empty() -> None:
    _, (a,) = twins(ORMap, 1)
    a.update("k", ORSet, adder(1))
    a.remove("k")
    a.update("k", ORSet, adder(2))
    assert a.value == {"k": frozenset({2})}


def test_ormap_nested_three_deep_remove_resets_what_it_observed() -> None:
    _, (a, b) = twins(ORMap)

    def deep(fn: Callable[[Any], Any]) -> Callable[[ORMap], ORMap]:
        return lambda m1: m1.update("l2", ORMap, lambda m2: m2.update("l3", ORMap, fn))

    a.update("l1", ORMap, deep(lambda m3: m3.update("s", ORSet, adder("old"))))
    a.update("l1", ORMap, deep(lambda m3: m3.update("c", GCounter, lambda c: c.increment(4))))
    sync(a, b)
    assert b.value == {"l1": {"l2": {"l3": {"s": frozenset({"old"}), "c": 4}}}}
    b.remove("l1")  # the outer remove observed everything under l1
    a.update("l1", ORMap, deep(lambda m3: m3.update("s", ORSet, adder("new"))))  # concurrent
    sync(a, b)
    assert a.value == b.value == {"l1": {"l2": {"l3": {"s": frozenset({"new"})}}}}
    nested = a["l1"]["l2"]["l3"]
    assert isinstance(nested, ORMap) and "c" not in nested
    # A remove in the middle resets only below it.
    b.update("l1", ORMap, lambda m1: m1.update("x", MVRegister, lambda r: r.set("keep")))
    b.update("l1", ORMap, lambda m1: m1.remove("l2"))
    sync(a, b)
    assert a.value == b.value == {"l1": {"x": ("keep",)}}


def test_ormap_nested_lwwmap_and_registers_use_the_map_clock() -> None:
    time = SimTime()
    hlc = HybridLogicalClock(time.clock())
    m = ORMap("a", clock=hlc)
    assert m.clock is hlc
    m.update("lm", LWWMap, lambda x: x.set("k", [1, {"a": 2}]))
    stamp = hlc.last
    m.update("lr", LWWRegister, lambda r: r.set("v"))
    assert hlc.last == stamp + 1  # same wall time: the shared clock moved on
    assert m.value == {"lm": {"k": (1, {"a": 2})}, "lr": "v"}
    for key in ("lm", "lr"):
        assert m[key].clock is hlc
    plain = ORMap("b", clock=time.clock(5))  # a plain wall clock: the map's HLC wraps it
    plain.update("deep", ORMap, lambda d: d.update("r", LWWRegister, lambda r: r.set(1)))
    assert plain["deep"]["r"].clock is plain.clock
    assert plain.clock.last == time.now + 5


def test_ormap_concurrent_types_under_one_key_show_the_first_type() -> None:
    _, (a, b) = twins(ORMap)
    a.update("k", ORSet, adder("x"))
    b.update("k", GCounter, lambda c: c.increment(2))
    sync(a, b)
    assert CRDT_TYPES.index(GCounter) < CRDT_TYPES.index(ORSet)
    assert a.value == b.value == {"k": 2}
    assert isinstance(a["k"], GCounter)
    with pytest.raises(TypeError):  # a type the key does not hold
        a.update("k", LWWRegister, lambda r: r.set(1))
    a.update("k", ORSet, adder("y"))  # a type it holds is fine
    b.remove("k")  # observed x and b's counter, not the concurrent y
    sync(a, b)
    assert a.value == b.value == {"k": frozenset({"y"})}


def test_ormap_update_checks_what_fn_returns() -> None:
    _, (a,) = twins(ORMap, 1)
    with pytest.raises(TypeError):
        a.update("k", ORSet, lambda s: GCounter("a").increment())
    with pytest.raises(TypeError):
        a.update("k", int, lambda s: s)  # type: ignore[type-var]
    assert a.value == {}


def test_ormap_several_writes_in_one_update_join_their_deltas() -> None:
    _, (a, b) = twins(ORMap)

    def two(s: ORSet) -> ORSet:
        delta = s.add(1)
        delta.merge(s.add(2))
        return delta

    b.merge(a.update("k", ORSet, two))
    assert b.value == {"k": frozenset({1, 2})}


# -- clock skew -------------------------------------------------------------------------


def far_ahead(kind: type[CRDT], ahead: int) -> tuple[SimTime, CRDT, CRDT, list[CRDT]]:
    """Replica a, and b on a clock ``ahead`` ns ahead; b's write: delta and full state."""
    time = SimTime()
    a = make(kind, "a", time.clock())
    b = make(kind, "b", time.clock(ahead))
    write: Callable[[], CRDT] = {
        LWWRegister: lambda: b.set("future"),
        LWWMap: lambda: b.set("k", "future"),
        ORMap: lambda: b.update(
            "m", ORMap, lambda m: m.update("l", LWWMap, lambda x: x.set("k", "future"))
        ),
    }[kind]
    return time, a, b, [write(), b]


@pytest.mark.parametrize("kind", [LWWRegister, LWWMap, ORMap])
def test_merge_refuses_a_timestamp_beyond_the_max_skew(kind: type[CRDT]) -> None:
    time, a, b, incoming = far_ahead(kind, MAX_SKEW_NS + 1)
    for x in incoming:
        before = a.copy()
        last = a.clock.last  # type: ignore[attr-defined]
        with pytest.raises(ValueError) as raised:
            a.merge(x)
        assert isinstance(raised.value, ClockSkewError)
        assert a == before, "a refused merge changed the state"
        assert a.value == before.value
        assert a.clock.last == last  # type: ignore[attr-defined]
    time.advance(2)  # once the local clock catches up, the same state merges
    for x in incoming:
        a.merge(x)
    assert a.value == b.value


@pytest.mark.parametrize("kind", [LWWRegister, LWWMap, ORMap])
def test_merge_accepts_a_timestamp_at_the_max_skew(kind: type[CRDT]) -> None:
    _, a, b, incoming = far_ahead(kind, MAX_SKEW_NS)
    for x in incoming:
        a.merge(x)
    assert a.value == b.value


def test_a_refused_merge_applies_nothing_of_the_group() -> None:
    time = SimTime()
    a = ORMap("a", clock=time.clock())
    b = ORMap("b", clock=time.clock(2 * MAX_SKEW_NS))
    group = b.update("n", GCounter, lambda c: c.increment(3))
    group.merge(b.update("deep", ORMap, lambda m: m.update("r", LWWRegister, lambda r: r.set(1))))
    a.update("mine", ORSet, adder(1))
    before = a.copy()
    with pytest.raises(ValueError):
        a.merge(group)
    assert a == before and a.value == {"mine": frozenset({1})}


def test_max_skew_comes_from_the_clock() -> None:
    time = SimTime()
    a = LWWRegister("a", clock=HybridLogicalClock(time.clock(), max_skew_ns=SECOND))
    b = LWWRegister("b", clock=time.clock(2 * SECOND))
    b.set(1)
    with pytest.raises(ValueError):
        a.merge(b)
    assert a.value is None
    c = MVRegister("c")  # no timestamps, nothing to refuse
    c.merge(MVRegister("d"))


ROGUE_WRITES: dict[type[CRDT], Callable[[Any], CRDT]] = {
    LWWRegister: lambda r: r.set("future"),
    LWWMap: lambda m: m.set("k1", "future"),
    ORMap: lambda m: m.update("lr", LWWRegister, lambda r: r.set("future")),
}


@settings(max_examples=examples(50))
@given(
    data=st.data(),
    name=st.sampled_from(["LWWRegister", "LWWMap", "ORMap[every]"]),
    ahead=st.integers(70 * SECOND, 10**6 * SECOND),
)
def test_far_future_writes_never_merge_into_reachable_states(
    data: st.DataObject, name: str, ahead: int
) -> None:
    """A peer whose clock is far ahead (well past the skews of the world) is refused."""
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=12, check_every_step=False))
    rogue = make(world.spec.kind, "r", world.time.clock(ahead))
    rogue.merge(join_all(world.replicas.values()))
    delta = ROGUE_WRITES[world.spec.kind](rogue)
    for replica in world.replicas.values():
        before = replica.copy()
        for incoming in (delta, rogue):
            with pytest.raises(ValueError):
                replica.merge(incoming)
            assert replica == before
            assert replica.value == before.value


@settings(max_examples=examples(60))
@given(
    data=st.data(),
    name=st.sampled_from(["LWWRegister", "LWWMap", "ORMap[registers]", "ORMap[every]"]),
)
def test_clocks_within_the_max_skew_never_refuse_each_other(data: st.DataObject, name: str) -> None:
    """Skews up to 59.98 s apart: the HLC pushes timestamps forward but never far enough
    ahead of the wall clocks for a peer to refuse them, however long the history."""
    half = MAX_SKEW_NS // 2 - 10**7
    world = data.draw(
        worlds(
            NAMED_SPECS[name],
            max_steps=40,
            skews=st.sampled_from([-half, half, 0]) | st.integers(-half, half),
        )
    )
    world.deliver_all()
    for src in world.rids:
        for dst in world.rids:
            world.merge(src, dst)
    world.check_all()


# -- deltas are not replicas -------------------------------------------------------------------

PRODUCE: dict[type[CRDT], list[Callable[[Any], Any]]] = {
    GCounter: [lambda x: x.increment(), lambda x: x.increment(3)],
    PNCounter: [lambda x: x.increment(), lambda x: x.decrement(2)],
    GSet: [lambda x: x.add(1), lambda x: x.add(2)],
    ORSet: [lambda x: x.add(1), lambda x: x.remove(1)],
    LWWRegister: [lambda x: x.set(1), lambda x: x.set([2])],
    MVRegister: [lambda x: x.set(1), lambda x: x.set({"a": 2})],
    EWFlag: [lambda x: x.enable(), lambda x: x.disable()],
    LWWMap: [lambda x: x.set("k", 1), lambda x: x.remove("k")],
    ORMap: [lambda x: x.update("k", ORSet, adder(1)), lambda x: x.remove("k")],
}
"""Two writes per type, each changing the state of a replica."""

WRITES: dict[type[CRDT], list[Callable[[Any], Any]]] = {
    GCounter: [lambda x: x.increment(), lambda x: x.increment(5)],
    PNCounter: [lambda x: x.increment(), lambda x: x.decrement(2)],
    GSet: [lambda x: x.add(99)],
    ORSet: [lambda x: x.add(99), lambda x: x.clear()],
    LWWRegister: [lambda x: x.set(1)],
    MVRegister: [lambda x: x.set(1)],
    EWFlag: [lambda x: x.enable(), lambda x: x.disable()],
    LWWMap: [lambda x: x.set("z", 1)],
    ORMap: [
        lambda x: x.update("z", ORSet, adder(2)),
        lambda x: x.update("new", GCounter, lambda c: c.increment()),
        lambda x: x.remove("k"),
    ],
}
"""Writes that would change any state (a no-op, like adding a present element, is not one)."""
KINDS = list(PRODUCE)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_writing_to_a_delta_raises_type_error(kind: type[CRDT]) -> None:
    time = SimTime()
    replica = make(kind, "a", time.clock())
    deltas = [write(replica) for write in PRODUCE[kind]]
    group = deltas[0].copy()
    group.merge(deltas[1])
    for delta in (*deltas, group, decode(encode(deltas[0]))):
        assert delta.is_delta and type(delta) is kind
        before = delta.copy()
        for write in WRITES[kind]:
            with pytest.raises(TypeError):
                write(delta)
        assert delta == before
    assert not replica.is_delta


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_merge_refuses_another_type(kind: type[CRDT]) -> None:
    time = SimTime()
    replica = make(kind, "a", time.clock())
    PRODUCE[kind][0](replica)
    before = replica.copy()
    for other in CRDT_TYPES:
        if other is not kind:
            with pytest.raises(TypeError):
                replica.merge(make(other, "b", time.clock()))
    assert replica == before


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_eq_ignores_the_replica_id_and_copy_is_independent(kind: type[CRDT]) -> None:
    time = SimTime()
    a, b = make(kind, "a", time.clock()), make(kind, "b", time.clock())
    assert a == b and a.replica_id == "a"
    PRODUCE[kind][0](a)
    assert a != b
    b.merge(a)
    assert a == b and b.replica_id == "b"
    twin = a.copy()
    assert twin == a and twin.replica_id == "a" and twin is not a
    PRODUCE[kind][1](twin)
    assert twin != a
    assert b == a  # writing to the copy left the original alone


def test_a_write_on_a_delta_joined_with_a_state_is_not_lost() -> None:
    a, b = ORSet("a"), ORSet("b")
    delta = a.add(1)
    b.add(3)
    joined = delta.copy()
    joined.merge(b)  # delta ⊔ state: no longer a delta, so writable
    assert not joined.is_delta
    joined.add(5)
    a.merge(joined)
    assert 5 in a


def test_a_delta_equals_the_state_it_makes() -> None:
    a = ORSet("a")
    delta = a.add(1)  # from the empty state, the delta is the whole new state
    assert delta.value == a.value
    assert delta == a
