"""Writes applied in place, with no delta (``LocalGroup.step``), record what their deltas would.

A durable batch's later writes to a replica skip making a delta: the set add
or counter step is applied to the nested replica in place, and the pending
delta group records the key and dots its delta would have named. The laws:

* an in-place write leaves the replica as its mutator does, and reports
  exactly the key the mutator's delta names and the dots of its context;
* a group fed any mix of deltas and in-place writes, across nested maps,
  with remote merges, removes and key removals in between, builds the same
  delta as a twin replica's group fed every write as a delta, and the two
  replicas are equal throughout;
* where the group does not name the path yet (or the replica at it has gone),
  ``step`` refuses and writes nothing;
* with nothing to record (no peer, no log), ``write_in_place`` writes as the
  mutator through ``ORMap.update`` does wherever the replica is held, and
  refuses where it is not.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from agentsync.crdt import (
    CRDT,
    EWFlag,
    GCounter,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    decode,
    encode,
)
from agentsync.crdt.group import LocalGroup, write_in_place
from tests.crdt.strategies import examples

Path = tuple[tuple[Hashable, type[CRDT]], ...]

ELEMENTS = st.sampled_from(["a", "b", "c", 1, (1, 2), None])
PATHS: list[Path] = [
    (("tasks", ORSet),),
    (("done", PNCounter),),
    (("seen", GCounter),),
    (("agent", ORMap), ("tasks", ORSet)),
    (("agent", ORMap), ("done", PNCounter)),
    (("agent", ORMap), ("inner", ORMap), ("tags", ORSet)),
    (("status", LWWRegister),),
    (("agent", ORMap), ("plan", MVRegister)),
    (("ready", EWFlag),),
]
WALL_NS = 1_700_000_000 * 10**9
"""Every replica's wall clock stands still: twins' HLCs tick alike, by their counters."""


def _map(replica_id: str) -> ORMap:
    return ORMap(replica_id, clock=lambda: WALL_NS)


def _in_place(kind: type[CRDT]) -> Any:
    return {
        ORSet: ORSet._add_in_place,
        LWWRegister: LWWRegister._set_in_place,
        MVRegister: MVRegister._set_in_place,
        EWFlag: EWFlag._enable_in_place,
    }.get(kind, PNCounter._step_in_place)


def _mutator(kind: type[CRDT], arg: Any) -> Any:
    if kind is ORSet:
        return lambda s: s.add(arg)
    if kind in (LWWRegister, MVRegister):
        return lambda r: r.set(arg)
    if kind is EWFlag:
        return lambda f: f.enable()
    n, sign = arg
    return lambda c: c.increment(n) if sign > 0 else c.decrement(n)


def _update(state: ORMap, path: Path, fn: Any) -> ORMap:
    """As ``Node`` writes: ``ORMap.update`` through every map on the way."""
    key, kind = path[0]
    if len(path) == 1:
        return state.update(key, kind, fn)
    return state.update(key, ORMap, lambda nested: _update(nested, path[1:], fn))


def _discard(element: Hashable) -> Any:
    return lambda s: s.discard(element)


def _remove(key: Hashable) -> Any:
    return lambda m: m.remove(key) if key in m else m._delta_shell(())


def _at(state: ORMap, path: Path) -> Any:
    replica: Any = state
    for key, kind in path:
        replica = replica.get(key)
        assert type(replica) is kind
    return replica


def _arg(kind: type[CRDT], draw: Any, low: int = 0) -> Any:
    """An element or value, or a counter step ``(n, sign)`` with ``n >= low`` (0 changes
    nothing)."""
    if kind in (ORSet, LWWRegister, MVRegister):
        return draw(ELEMENTS)
    if kind is EWFlag:
        return None
    sign = 1 if kind is GCounter else draw(st.sampled_from([1, -1]))
    return (draw(st.integers(low, 3)), sign)


@settings(max_examples=examples(200))
@given(data=st.data())
def test_an_in_place_write_is_its_mutator_without_the_delta(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from([p for p in PATHS if len(p) == 1]))
    kind = path[0][1]
    mine, theirs = _map("r1"), _map("r2")
    for _ in range(data.draw(st.integers(0, 6))):  # a history: own writes and a peer's
        who = data.draw(st.sampled_from([mine, theirs]))
        arg = _arg(kind, data.draw)
        delta = _update(who, path, _mutator(kind, arg))
        (theirs if who is mine else mine).merge(delta)
    _update(mine, path, _mutator(kind, _arg(kind, data.draw, 1)))  # so the replica exists
    twin = mine.copy()
    arg = _arg(kind, data.draw)
    delta = _at(twin, path)
    delta = _mutator(kind, arg)(delta)
    done = _in_place(kind)(_at(mine, path), arg)
    assert mine == twin
    if done is None:  # a step of 0
        assert not delta._ctx._cloud and not delta._ctx._vv
        return
    named, dot, superseded = done
    assert set(delta._ctx._cloud) == {dot, *((e[0], e[1]) for e in superseded)}
    assert not delta._ctx._vv
    if kind is ORSet:
        assert delta._entries == {named: (dot,)}
    else:
        assert [(e[0], e[1]) for e in delta._entries] == [dot]
    if kind in (LWWRegister, MVRegister, EWFlag):  # the write supersedes every entry seen
        assert delta._entries == _at(mine, path)._entries


@settings(max_examples=examples(300))
@given(data=st.data())
def test_a_group_fed_in_place_writes_builds_the_group_of_their_deltas(
    data: st.DataObject,
) -> None:
    """Random writes, some in place, with merges and removes between; twin replicas."""
    fast, slow, peer = _map("me"), _map("me"), _map("peer")
    for path in data.draw(st.lists(st.sampled_from(PATHS), max_size=3)):  # a prior state
        delta = _update(peer, path, _mutator(path[-1][1], _arg(path[-1][1], data.draw)))
        fast.merge(delta)
        slow.merge(delta)
    fast_group, slow_group = LocalGroup(fast), LocalGroup(slow)
    peer_deltas: list[ORMap] = []
    stepped = 0
    for _ in range(data.draw(st.integers(1, 30))):
        what = data.draw(st.sampled_from(["write", "write", "write", "peer", "merge", "remove"]))
        path = data.draw(st.sampled_from(PATHS))
        kind = path[-1][1]
        if what == "write":
            arg = _arg(kind, data.draw)
            if fast_group.step(path, _in_place(kind), arg):
                stepped += 1
            else:
                fast_group.add(_update(fast, path, _mutator(kind, arg)))
            slow_group.add(_update(slow, path, _mutator(kind, arg)))
        elif what == "peer":
            peer_deltas.append(_update(peer, path, _mutator(kind, _arg(kind, data.draw))))
        elif what == "merge" and peer_deltas:
            delta = peer_deltas.pop(data.draw(st.integers(0, len(peer_deltas) - 1)))
            fast.merge(delta.copy())
            slow.merge(delta.copy())
        elif what == "remove":  # a local remove of a key or an element, as a delta
            parent_path, (key, _) = path[:-1], path[-1]
            if kind is ORSet and data.draw(st.booleans()):
                fn = _discard(data.draw(ELEMENTS))
                fast_group.add(_update(fast, path, fn))
                slow_group.add(_update(slow, path, fn))
            elif parent_path:
                fn = _remove(key)
                fast_group.add(_update(fast, parent_path, fn))
                slow_group.add(_update(slow, parent_path, fn))
            elif key in fast:
                fast_group.add(fast.remove(key))
                slow_group.add(slow.remove(key))
        assert fast == slow
    assert fast_group.writes == slow_group.writes
    event(f"in place: {'some' if stepped else 'none'}")
    built, expected = fast_group.build(), slow_group.build()
    assert built == expected
    assert set(built._ctx) == set(expected._ctx)
    assert decode(encode(built)) == expected
    receiver = peer.copy()
    receiver.merge(built)
    twin = peer.copy()
    twin.merge(expected)
    assert receiver == twin


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "/".join(str(k) for k, _ in p))
def test_step_refuses_a_path_the_group_does_not_name(path: Path) -> None:
    state = ORMap("me")
    group = LocalGroup(state)
    kind = path[-1][1]
    arg = (1, 1) if kind in (PNCounter, GCounter) else "x"
    assert not group.step(path, _in_place(kind), arg)
    assert state == ORMap("me") and group.writes == 0
    group.add(_update(state, path, _mutator(kind, arg)))
    assert group.step(path, _in_place(kind), arg)
    assert group.writes == 2
    # The replica removed (by a merge, say): refused again, nothing written.
    top = path[0][0]
    state.remove(top)
    before = state.copy()
    assert not group.step(path, _in_place(kind), arg)
    assert state == before


def test_step_looks_a_mutable_key_up_afresh_each_time() -> None:
    """A path's list key is frozen at each write, as ``ORMap.update`` does: a list changed
    in between names another key, which this group does not name yet."""
    state = ORMap("me")
    group = LocalGroup(state)
    key = [1, 2]
    path: Path = (("m", ORMap), (key, ORSet))  # a list key, on purpose
    group.add(_update(state, path, _mutator(ORSet, "x")))
    assert group.step(path, ORSet._add_in_place, "y")
    key.append(3)
    before = state.copy()
    assert not group.step(path, ORSet._add_in_place, "z")
    assert state == before
    assert state.value == {"m": {(1, 2): frozenset({"x", "y"})}}


@settings(max_examples=examples(200))
@given(data=st.data())
def test_writing_in_place_with_nothing_to_record_is_the_update(data: st.DataObject) -> None:
    fast, slow, peer = _map("me"), _map("me"), _map("peer")
    for _ in range(data.draw(st.integers(1, 30))):
        path = data.draw(st.sampled_from(PATHS))
        kind = path[-1][1]
        arg = _arg(kind, data.draw)
        if data.draw(st.integers(0, 3)) == 0:  # a peer's write, or a key removed
            if path[0][0] in fast and data.draw(st.booleans()):
                fast.remove(path[0][0])
                slow.remove(path[0][0])
            else:
                delta = _update(peer, path, _mutator(kind, arg))
                fast.merge(delta.copy())
                slow.merge(delta)
        else:
            held = _held(fast, path)
            wrote = write_in_place(fast, path, _in_place(kind), arg)
            assert wrote == held
            if not wrote:
                _update(fast, path, _mutator(kind, arg))
            _update(slow, path, _mutator(kind, arg))
        assert fast == slow
        assert set(fast._ctx) == set(slow._ctx)


def _held(state: ORMap, path: Path) -> bool:
    replica: Any = state
    for key, kind in path:
        replica = replica.get(key) if isinstance(replica, ORMap) else None
        if type(replica) is not kind:
            return False
    return True
