"""Lattice laws of every CRDT type, on states and deltas that random histories reach.

For every type (and ORMaps nesting every type, three levels deep), on 2-4
replicas with skewed deterministic clocks:

* merge (the join) is commutative, associative and idempotent, and leaves its
  argument alone;
* a mutator's delta is what the mutation added: ``pre ⊔ δ == post``, and so
  ``x ⊔ δ ⊔ pre == x ⊔ post`` for any other state x;
* once every delta reached every replica, in any order and with duplicates,
  the replicas are equal, and equal to the join of all their states;
* a delta group (deltas joined first) merges like its deltas one by one, and
  a ``LocalGroup`` of one replica's unsent deltas builds that same group;
* a delta reads like the state it makes from empty, and states and deltas
  keep their state through encode/decode.

``==`` compares replicated state (not the replica id); merge is in place, so
each side works on ``.copy()``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import CRDT, decode, encode
from agentsync.crdt.group import LocalGroup
from tests.crdt.strategies import (
    NAMED_SPECS,
    Draw,
    World,
    check_reads,
    examples,
    join_all,
    lattice_elements,
    make,
    specs,
    worlds,
)

SPEC_NAMES = list(NAMED_SPECS)
EXAMPLES = 40
"""Per type; the random-spec tests add more, across types."""


def join(*states: CRDT) -> CRDT:
    return join_all(states)


def world_of(draw: Draw[Any], name: str | None, **kw: Any) -> World:
    spec = NAMED_SPECS[name] if name else specs()
    return draw(worlds(spec, snapshots=True, check_every_step=False, **kw))


def check_join_laws(a: CRDT, b: CRDT, c: CRDT) -> None:
    ab, ba = join(a, b), join(b, a)
    assert ab == ba, "merge is not commutative"
    assert ab.value == ba.value
    assert join(ab, c) == join(a, join(b, c)), "merge is not associative"
    assert join(a, a) == a, "merge is not idempotent"
    assert join(ab, a) == ab and join(ab, b) == ab, "a ⊔ b does not include a and b"
    same = a.copy()
    same.merge(same)  # merging a replica into itself changes nothing
    assert same == a


def check_merge_leaves_argument(a: CRDT, b: CRDT) -> None:
    before = b.copy()
    into = a.copy()
    into.merge(b)
    assert b == before, "merge changed its argument"
    into.merge(join(b, a))  # later merges into the merged replica do not leak into b
    assert b == before


# -- join laws -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_join_laws_on_states(name: str, data: st.DataObject) -> None:
    world = world_of(data.draw, name)
    pool = lattice_elements(world, deltas=False)
    a, b, c = (data.draw(st.sampled_from(pool)) for _ in range(3))
    check_join_laws(a, b, c)
    check_merge_leaves_argument(a, b)


@settings(max_examples=examples(150))
@given(data=st.data())
def test_join_laws_on_states_of_random_specs(data: st.DataObject) -> None:
    world = world_of(data.draw, None)
    pool = lattice_elements(world, deltas=False)
    a, b, c = (data.draw(st.sampled_from(pool)) for _ in range(3))
    check_join_laws(a, b, c)
    check_merge_leaves_argument(a, b)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_merge_leaves_its_argument_alone(name: str, data: st.DataObject) -> None:
    world = world_of(data.draw, name)
    pool = lattice_elements(world, deltas=True)
    a, b = (data.draw(st.sampled_from(pool)) for _ in range(2))
    check_merge_leaves_argument(a, b)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_join_laws_with_deltas(name: str, data: st.DataObject) -> None:
    """Deltas are lattice elements too: the laws hold for any mix of deltas and states."""
    world = world_of(data.draw, name)
    pool = lattice_elements(world, deltas=True)
    a, b, c = (data.draw(st.sampled_from(pool)) for _ in range(3))
    check_join_laws(a, b, c)
    assert join(a, b).is_delta == (a.is_delta and b.is_delta)


# -- deltas ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_delta_is_what_the_mutation_added(name: str, data: st.DataObject) -> None:
    world = world_of(data.draw, name, max_steps=15)
    assert world.snapshots is not None
    others = lattice_elements(world, deltas=False)
    for snap in world.snapshots:
        assert snap.delta.is_delta
        assert join(snap.pre, snap.delta) == snap.post, "pre ⊔ delta != post"
        assert join(snap.pre, snap.delta).value == snap.post.value
        other = data.draw(st.sampled_from(others))
        assert join(other, snap.delta, snap.pre) == join(other, snap.post)
        assert join(other, snap.pre, snap.delta) == join(other, snap.post)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_delta_groups_merge_like_their_deltas(name: str, data: st.DataObject) -> None:
    world = world_of(data.draw, name)
    if not world.sent:
        return
    indices = range(len(world.sent))
    chosen = data.draw(st.lists(st.sampled_from(indices), min_size=1, max_size=8))
    deltas = [world.sent[i].delta for i in chosen]
    group = join(*deltas)
    assert group.is_delta, "a group of deltas is a delta"
    # Grouping is associative too: a group of two subgroups is the same group.
    cut = data.draw(st.integers(0, len(deltas)))
    halves = [join(*part) for part in (deltas[:cut], deltas[cut:]) if part]
    regroup = join(*halves)
    for target in lattice_elements(world, deltas=False):
        one_by_one = join(target, *deltas)
        assert join(target, group) == one_by_one
        assert join(target, regroup) == one_by_one
        assert join(target, group).value == one_by_one.value


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_a_local_group_builds_the_join_of_its_deltas(name: str, data: st.DataObject) -> None:
    """What the sync layer buffers: one replica's writes since its last exchange.

    The writes are interleaved with merges of other replicas' states and
    deltas into it, but none of them has reached another replica yet.
    """
    world = world_of(data.draw, name)
    rid = data.draw(st.sampled_from(world.rids))
    start = len(world.sent)
    for _ in range(data.draw(st.integers(1, 12))):
        action = data.draw(st.sampled_from(("write", "write", "write", "other", "merge", "tick")))
        other = data.draw(st.sampled_from([r for r in world.rids if r != rid]))
        if action == "write":
            world.mutate(data.draw, rid)
        elif action == "other" and world.mutate(data.draw, other) is not None:
            world.deliver(len(world.sent) - 1, rid)
        elif action == "merge":
            world.merge(other, rid)
        elif action == "tick":
            world.time.advance(data.draw(st.integers(0, 10**9)))
    deltas = [sent.delta for sent in world.sent[start:] if sent.origin == rid]
    if not deltas:
        return
    replica = world.replicas[rid]
    before = replica.copy()
    group = LocalGroup(replica)
    for delta in deltas:
        group.add(delta)
    built = group.build()
    assert group.writes == len(deltas)
    assert replica == before, "building the group changed the replica"
    joined = join(*deltas)
    assert built.is_delta
    assert built == joined
    assert decode(encode(built)) == built
    for target in lattice_elements(world, deltas=False):
        assert join(target, built) == join(target, joined)


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_the_unseen_part_merges_like_the_whole(name: str, data: st.DataObject) -> None:
    """RR: forwarding ``a.unseen_part(b)`` instead of ``b`` is safe at ``a`` and downstream.

    Downstream means any replica that already holds ``a`` (here ``a ⊔ x``):
    the sync layer forwards a part only to peers that hold the state it was
    cut against.
    """
    world = world_of(data.draw, name)
    pool = lattice_elements(world, deltas=True)
    if world.sent:
        indices = range(len(world.sent))
        chosen = data.draw(st.lists(st.sampled_from(indices), min_size=1, max_size=6))
        pool.append(join(*(world.sent[i].delta for i in chosen)))
    a, b, x = (data.draw(st.sampled_from(pool)) for _ in range(3))
    part = a.unseen_part(b)
    assert join(a, b) == (join(a, part) if part is not None else a)
    if part is None:
        return
    assert part.is_delta or not b.is_delta
    downstream = join(a, x)
    assert join(downstream, b) == join(downstream, part), "the part lost something downstream"
    assert part.context <= b.context


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_a_delta_reads_like_the_state_it_makes(name: str, data: st.DataObject) -> None:
    """A delta (or group), merged into an empty replica, gives a state that reads the same."""
    world = world_of(data.draw, name)
    deltas = [sent.delta for sent in world.sent]
    if len(deltas) > 1:
        deltas.append(join(*data.draw(st.permutations(deltas))))
    for delta in deltas:
        made = make(type(delta), "zz", world.time.clock())
        made.merge(delta)
        assert delta.value == made.value
        check_reads(delta, made.value)


# -- convergence --------------------------------------------------------------------------


def check_convergence(world: World, data: st.DataObject) -> None:
    everything = join_all(world.replicas.values())
    indices = list(range(len(world.sent)))
    for rid in world.rids:
        extra = data.draw(st.lists(st.sampled_from(indices), max_size=5)) if indices else []
        order = data.draw(st.permutations(indices + extra))
        for index in order:
            world.deliver(index, rid)
    states = list(world.replicas.values())
    for state in states[1:]:
        assert state == states[0], "replicas did not converge"
        assert state.value == states[0].value
    assert states[0] == everything, "converged state is not the join of all states"
    expect = world.model.value(world.everything())
    for rid in world.rids:
        assert world.replicas[rid].value == expect


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_convergence_after_delivering_every_delta(name: str, data: st.DataObject) -> None:
    check_convergence(world_of(data.draw, name, max_steps=25), data)


@settings(max_examples=examples(150))
@given(data=st.data())
def test_convergence_of_random_specs(data: st.DataObject) -> None:
    check_convergence(world_of(data.draw, None, max_steps=25), data)


# -- the wire form keeps the state ---------------------------------------------------------


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_encode_decode_keeps_states(name: str, data: st.DataObject) -> None:
    world = world_of(data.draw, name)
    for state in lattice_elements(world, deltas=False):
        back = decode(encode(state))
        assert type(back) is type(state)
        assert back == state
        assert back.value == state.value
        assert back.replica_id == state.replica_id
        assert not back.is_delta


@pytest.mark.parametrize("name", SPEC_NAMES)
@settings(max_examples=examples(EXAMPLES))
@given(data=st.data())
def test_encode_decode_keeps_deltas(name: str, data: st.DataObject) -> None:
    world = world_of(data.draw, name)
    for sent in world.sent:
        back = decode(encode(sent.delta))
        assert back.is_delta
        assert type(back) is type(sent.delta)
        assert back == sent.delta
        assert back.value == sent.delta.value
        for state in world.replicas.values():  # the decoded delta merges the same
            assert join(state, back) == join(state, sent.delta)
