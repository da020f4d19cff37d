"""Bounded metadata (issue 5): no tombstones for removals, contexts compact to a vector.

* **No per-element tombstones.** An ORSet or ORMap removal leaves no entry
  for what it removed, at the replica that removed it and at every replica
  the removal reaches (by delta, delta group or full state): only the causal
  context remembers the removed dots. Stated for every type on random
  histories as "a full state stores exactly the dots of the model's live
  events, and names no key it holds no dot under"; LWWMap's removals are
  live events (last-writer-wins needs the remove's timestamp), so its
  tombstones are counted as what they are.
* **Contexts compact.** A replica's causal context folds its dot cloud into
  the version vector as soon as the dots are contiguous: once a replica has
  seen every dot up to each replica's last, its cloud is empty, whatever the
  order the dots arrived in and whatever gaps were open on the way.

A *delta's* context is exempt from the second rule by design (it holds
exactly its dots, see ``CausalContext``); merged into a replica, it compacts.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import CRDT, CausalContext, GSet, ORMap, ORSet, decode, encode
from agentsync.crdt.base import KeyedStore
from agentsync.crdt.codec import Writer
from tests.crdt.strategies import (
    ELEMENTS,
    NAMED_SPECS,
    World,
    examples,
    specs,
    worlds,
)

SPEC_NAMES = list(NAMED_SPECS)
REMOVING_SPECS = ["ORSet", "ORMap[ORSet]", "ORMap[every]", "ORMap[ORMap[ORMap]]"]
"""The specs whose removals must leave nothing in the store."""
EXAMPLES = 15


def stored_dots(replica: CRDT) -> list[tuple[str, int]]:
    return list(replica._dots())


def assert_no_empty_keys(replica: CRDT, where: str = "") -> None:
    """A full state names no key (or nested type) under which it holds no dot."""
    assert not replica.is_delta, where
    if isinstance(replica, ORMap):
        for key, fields in replica._fields.items():
            assert fields, f"{where}/{key!r}: an ORMap key with no field (a tombstone)"
            for tag, nested in fields.items():
                assert not nested._is_empty(), f"{where}/{key!r}:{tag}: an empty nested store"
                assert_no_empty_keys(nested, f"{where}/{key!r}:{tag}")
    elif isinstance(replica, KeyedStore):
        empty = [key for key, dots in replica._entries.items() if not dots]
        assert not empty, f"{where}: keys with no dot (tombstones): {empty!r}"


def assert_compact_vector(ctx: CausalContext, tops: dict[str, int], where: str = "") -> None:
    """``ctx`` holds exactly the dots 1..tops[r] of each replica r, as a bare vector."""
    assert ctx.cloud == frozenset(), f"{where}: contiguous dots left in the cloud: {ctx!r}"
    assert ctx.version_vector == {r: n for r, n in tops.items() if n}, where


def issued(world: World) -> dict[str, int]:
    """How many dots each replica of the world issued (its own context's top)."""
    return {rid: world.replicas[rid].context.max_counter(rid) for rid in world.rids}


def check_store_matches_live_events(world: World) -> None:
    for rid, replica in world.replicas.items():
        live = world.model.alive(world.model.known[rid])
        dots = stored_dots(replica)
        assert len(dots) == len(set(dots))
        assert len(dots) == len(live), (
            f"replica {rid} stores {len(dots)} dots for {len(live)} live events: {replica!r}"
        )
        assert_no_empty_keys(replica, rid)


# -- no tombstones ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_a_state_stores_only_the_dots_of_live_events(name: str, data: st.DataObject) -> None:
    """Whatever was delivered, merged or removed: no dot of a dead event is stored."""
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=25, check_every_step=False))
    check_store_matches_live_events(world)
    world.deliver_all(data.draw(st.permutations(range(len(world.sent)))))
    check_store_matches_live_events(world)


@settings(max_examples=examples(100))
@given(data=st.data())
def test_a_state_of_a_random_spec_stores_only_live_dots(data: st.DataObject) -> None:
    world = data.draw(worlds(specs(), max_steps=25, check_every_step=False))
    check_store_matches_live_events(world)


def remove_everything(replica: CRDT) -> CRDT:
    """Remove every element or key the replica holds; return the joined delta."""
    if isinstance(replica, ORSet):
        return replica.clear()
    assert isinstance(replica, ORMap)
    delta = replica._delta_shell(())
    for key in list(replica):
        delta.merge(replica.remove(key))
    return delta


def blank_on(replica: CRDT) -> CRDT:
    """An empty full state of the same type on the same context: what only the context costs."""
    return type(replica)._blank(replica.replica_id, replica.context, replica._clock(), 0)


@pytest.mark.parametrize("name", REMOVING_SPECS)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_after_removing_everything_only_the_context_remains(name: str, data: st.DataObject) -> None:
    """A removal's whole trace, everywhere it reached, is dots in the causal context."""
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=25, check_every_step=False))
    world.deliver_all()
    remover = data.draw(st.sampled_from(world.rids))
    delta = remove_everything(world.replicas[remover])
    for rid, replica in world.replicas.items():
        if rid != remover:
            replica.merge(decode(encode(delta)) if data.draw(st.booleans()) else delta)
        assert replica.value in (frozenset(), {}), f"replica {rid} still shows {replica.value!r}"
        assert stored_dots(replica) == []
        assert_no_empty_keys(replica, rid)
        assert encode(replica) == encode(blank_on(replica)), f"replica {rid} keeps more"
        assert_compact_vector(replica.context, issued(world), rid)


def test_orset_removal_leaves_no_entry_anywhere() -> None:
    a, b, c = ORSet("a"), ORSet("b"), ORSet("c")
    added = a.add("x")
    a.add("y")
    b.merge(a)
    removal = b.remove("x")
    a.merge(removal)
    c.merge(a)  # a full state that saw the removal
    for replica in (a, b, c):
        assert "x" not in replica._entries, replica
        assert ("a", 1) in replica.context  # the context remembers the removed dot
        assert replica.value == frozenset({"y"})
    a.merge(added)  # a stale duplicate of the add brings nothing back
    assert "x" not in a._entries


def test_add_remove_cycles_on_one_orset_keep_one_vector_entry() -> None:
    """The single-replica core of the 3-replica test in ``tests/sync/test_metadata.py``."""
    s = ORSet("a")
    s.add("live")
    for _ in range(50_000):
        s.add("x")
        s.remove("x")
    assert list(s._entries) == ["live"]
    assert_compact_vector(s.context, {"a": 100_001})
    assert len(encode(s)) < 40, encode(s)


def test_ormap_removal_leaves_no_key_anywhere() -> None:
    a, b = ORMap("a"), ORMap("b")
    a.update("k", ORSet, lambda s: s.add(1))
    a.update("j", ORMap, lambda m: m.update("s", GSet, lambda g: g.add(2)))
    b.merge(a)
    a.merge(b.remove("k"))
    b.merge(a.update("j", ORMap, lambda m: m.remove("s")))  # a nested map emptied
    for replica in (a, b):
        assert replica._fields == {}, replica._fields
        assert replica.value == {}
        assert_compact_vector(replica.context, {"a": 3, "b": 1})


def test_emptying_a_nested_set_drops_its_key() -> None:
    a, b = ORMap("a"), ORMap("b")
    b.merge(a.update("k", ORSet, lambda s: s.add(1)))
    b.merge(a.update("k", ORSet, lambda s: s.remove(1)))
    for replica in (a, b):
        assert "k" not in replica._fields


# -- contexts compact -------------------------------------------------------------------


@st.composite
def scattered_dots(draw: Any) -> tuple[dict[str, int], list[list[tuple[str, int]]]]:
    """Every dot 1..top of a few replicas, shuffled and cut into chunks (gaps galore)."""
    tops = draw(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 40), min_size=1))
    dots = [(r, n) for r, top in tops.items() for n in range(1, top + 1)]
    order = draw(st.permutations(dots))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(order)), max_size=12))))
    bounds = [0, *cuts, len(order)]
    chunks = [order[i:j] for i, j in itertools.pairwise(bounds) if i < j]
    return tops, chunks


@settings(max_examples=examples(150))
@given(scattered=scattered_dots(), data=st.data())
def test_contexts_merged_in_any_order_compact_to_a_vector(
    scattered: tuple[dict[str, int], list[list[tuple[str, int]]]], data: st.DataObject
) -> None:
    """Replica contexts merged pairwise in a random tree, with some dots added singly."""
    tops, chunks = scattered
    pool: list[CausalContext] = []
    for chunk in chunks:
        how = data.draw(st.sampled_from(("built", "added", "delta")))
        if how == "built":
            pool.append(CausalContext(cloud=chunk))
        elif how == "added":
            ctx = CausalContext()
            for dot in chunk:
                ctx.add(dot)
            pool.append(ctx)
        else:  # a delta's context (exactly its dots), merged into an empty replica's
            ctx = CausalContext()
            ctx.merge(CausalContext._of_dots(set(chunk)))
            pool.append(ctx)
    while len(pool) > 1:
        pair = st.lists(st.integers(0, len(pool) - 1), min_size=2, max_size=2, unique=True)
        i, j = data.draw(pair)
        into, other = pool[i], pool[j]
        into.merge(other)
        vv = into.version_vector
        for replica_id, n in into.cloud:  # compact after every merge, not only at the end
            assert n > vv.get(replica_id, 0) + 1, into
        pool.pop(j)
    assert_compact_vector(pool[0], tops)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_replicas_compact_once_every_delta_arrived(name: str, data: st.DataObject) -> None:
    """Deltas delivered in any order, with duplicates: no dot is left in any cloud."""
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=25, check_every_step=False))
    tops = issued(world)
    indices = list(range(len(world.sent)))
    for rid in world.rids:
        extra = data.draw(st.lists(st.sampled_from(indices), max_size=5)) if indices else []
        for index in data.draw(st.permutations(indices + extra)):
            world.deliver(index, rid, wire=data.draw(st.booleans()))
    for rid, replica in world.replicas.items():
        assert_compact_vector(replica.context, tops, rid)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_replicas_compact_once_full_states_spread(name: str, data: st.DataObject) -> None:
    """Full-state merges in a random order, then a last round: every cloud is empty."""
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=25, check_every_step=False))
    tops = issued(world)
    rids = list(world.rids)
    for _ in range(data.draw(st.integers(0, 6))):
        src, dst = data.draw(st.permutations(rids))[:2]
        world.merge(src, dst, wire=data.draw(st.booleans()))
    for src in data.draw(st.permutations(rids)):  # gather everything at the first...
        world.merge(src, rids[0])
    for dst in rids[1:]:  # ...and spread it
        world.merge(rids[0], dst)
    for rid, replica in world.replicas.items():
        assert_compact_vector(replica.context, tops, rid)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_a_delta_group_merged_into_a_replica_compacts(name: str, data: st.DataObject) -> None:
    world = data.draw(worlds(NAMED_SPECS[name], max_steps=25, check_every_step=False))
    if not world.sent:
        return
    tops = issued(world)
    order = data.draw(st.permutations(range(len(world.sent))))
    group = world.sent[order[0]].delta.copy()
    for index in order[1:]:
        group.merge(world.sent[index].delta)
    fresh = type(group)._blank("zz", CausalContext(), group._clock(), 0)
    fresh.merge(group)
    assert_compact_vector(fresh.context, tops)


def test_a_gap_filled_later_folds_the_cloud() -> None:
    a, b = ORSet("a"), ORSet("b")
    deltas = [a.add(e) for e in ELEMENTS[:6]]
    for delta in deltas[::-1]:  # newest first: every dot but the last waits in the cloud
        b.merge(delta)
    assert_compact_vector(b.context, {"a": 6})
    c = ORSet("c")
    c.merge(deltas[0])
    c.merge(deltas[2])
    assert c.context.cloud == frozenset({("a", 3)})
    c.merge(deltas[1])
    assert_compact_vector(c.context, {"a": 3})


# -- large clouds: the bulk paths agree with dot-by-dot ------------------------------------

big_clouds = st.sets(st.tuples(st.sampled_from("abc"), st.integers(1, 400)), max_size=300)


@settings(max_examples=examples(150))
@given(
    vector=st.dictionaries(st.sampled_from("abcd"), st.integers(1, 200), max_size=3),
    mine=big_clouds,
    theirs=big_clouds,
)
def test_merging_a_large_cloud_is_adding_its_dots_one_by_one(
    vector: dict[str, int], mine: set[tuple[str, int]], theirs: set[tuple[str, int]]
) -> None:
    """A delta group's cloud (thousands of dots) merges in bulk: same dots, still compact."""
    bulk = CausalContext(vector, mine)
    one_by_one = bulk.copy()
    bulk.merge(CausalContext._of_dots(set(theirs)))
    for dot in theirs:
        one_by_one.add(dot)
    assert bulk.version_vector == one_by_one.version_vector
    assert bulk.cloud == one_by_one.cloud
    into_delta = CausalContext._of_dots(set(mine))  # a delta's context merging another's
    into_delta.merge(CausalContext._of_dots(set(theirs)))
    assert set(into_delta) == mine | theirs
    missing = CausalContext._of_dots(set(theirs))._minus(CausalContext(vector, mine), 1 << 20)
    assert missing is not None
    assert set(missing) == set(CausalContext(cloud=theirs)) - set(CausalContext(vector, mine))


def reference_ranges(cloud: set[tuple[str, int]], ids: list[str]) -> list[int]:
    """The cloud's ranges as the codec wrote them dot by dot before (the reference)."""
    ranges: list[int] = []
    for rid, n in sorted(cloud):
        index = ids.index(rid)
        if ranges and ranges[-3] == index and ranges[-2] + ranges[-1] == n:
            ranges[-1] += 1
        else:
            ranges += (index, n, 1)
    return ranges


@settings(max_examples=examples(150))
@given(cloud=big_clouds)
def test_a_cloud_encodes_as_its_maximal_runs(cloud: set[tuple[str, int]]) -> None:
    writer = Writer()
    vector, ranges = writer.context(CausalContext._of_dots(set(cloud)))
    assert vector == []
    assert ranges == reference_ranges(cloud, writer.replica_ids)
