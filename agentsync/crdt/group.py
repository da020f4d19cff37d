"""A delta group of a replica's own writes, kept as what they name and their dots.

The sync layer joins every local write's delta into one group between two
exchanges. Joining each delta as it comes costs a merge per write; a
``LocalGroup`` instead records only the keys each delta names and its
context, and reads the joined delta off the replica when it is needed.

Why that is the join: each local delta holds entries under fresh dots, plus
a context of those dots and of the dots it overwrote or removed. An entry of
the group is one whose dot the group's context holds and that no later write
of the group dropped, which is exactly an entry the replica still holds
under a dot of the group's context, provided no merge dropped one of the
group's own entries. Nothing outside the replica has those entries yet (the
group is not sent until it is built), so no merge can drop one, and no merge
can bring back a dot the replica's context has seen. Keys named but left
empty stay named, so merging the group still removes there what its writes
removed. The law is stated as a property in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from agentsync.crdt.base import CRDT
from agentsync.crdt.dots import CausalContext, InPlace
from agentsync.crdt.values import freeze_key

T = TypeVar("T", bound=CRDT)

NestedPath = Sequence[tuple[Hashable, type[CRDT]]]
"""``(key, type)`` from an ORMap down through nested maps to a nested replica."""
WriteInPlace = Callable[[Any, Any], InPlace | None]
"""A mutator applied in place to a nested replica, with its argument (see ``InPlace``)."""


class LocalGroup(Generic[T]):
    """The join of ``replica``'s deltas added here, built on demand with ``build``.

    Add only deltas the replica issued, in any order, and build the group
    before any of them is sent: merges into the replica in between are fine.
    """

    __slots__ = ("_ctx", "_leaf", "_names", "_path", "_replica", "_steps", "writes")

    def __init__(self, replica: T) -> None:
        self._replica = replica
        self._names: Any = replica._no_names()
        self._ctx = CausalContext._of_dots(set())
        self._path: NestedPath | None = None
        """The last path ``step`` wrote at: its keys frozen with their tags (``_steps``),
        and what the group names there (``_leaf``), looked up once per handle."""
        self._steps: tuple[tuple[Hashable, str], ...] = ()
        self._leaf: Any = None
        self.writes = 0
        """How many deltas were added."""

    def add(self, delta: T) -> None:
        """Record a delta of a write already applied to the replica."""
        self._names = delta._name_into(self._names)
        theirs = delta._ctx
        mine = self._ctx
        if theirs._vv or mine._vv:
            mine.merge(theirs)
        else:  # a mutator's delta lists its dots; so may the group (it is a delta)
            mine._cloud |= theirs._cloud
        self.writes += 1

    def step(self, path: NestedPath, in_place: WriteInPlace, arg: Any) -> bool:
        """Write ``in_place(nested, arg)`` to the replica at ``path`` and record it like its
        delta, making none; False, with nothing written, where this group names no
        ``path`` yet.

        ``path`` runs from the replica (an ORMap) down through nested maps,
        ``(key, type)`` at each step, as ``ORMap.update`` is called. ``in_place``
        applies a mutator to the nested replica and returns what its delta would
        name and its context's dots (``InPlace``), or None for a write that
        changed nothing. Where the group names ``path``, an earlier write made
        that nested replica and passed ``update``'s checks (the key's type, the
        nesting depth), and a write that leaves an entry (an add, a step, a
        register set, an enable) cannot empty it: the map deltas ``update``
        would wrap around the nested delta add nothing the group has not
        recorded. A batch's writes after its first to a replica take this
        path, and so do those of a node without a store between two exchanges.
        """
        if path is self._path:  # the same handle's path again: the same keys and names
            steps, names = self._steps, self._leaf
        else:
            steps = _frozen(path)
            names = self._names
            for frozen, tag in steps:
                held = (names.get(frozen) or {}).get(tag)
                if held is None:
                    return False
                names = held[1]
            if all(frozen is key for (frozen, _), (key, _) in zip(steps, path, strict=True)):
                # keys that freeze to themselves cannot change under the cache (a list can)
                self._path, self._steps, self._leaf = path, steps, names
        replica = _held_at(self._replica, steps)
        if replica is None:
            return False
        ctx = self._ctx
        if ctx._vv:
            return False
        done = in_place(replica, arg)
        if done is not None:
            key, dot, superseded = done
            if names is not None:  # a store with keys
                names.add(key)
            cloud = ctx._cloud
            cloud.add(dot)
            for entry in superseded:
                cloud.add((entry[0], entry[1]))
        self.writes += 1
        return True

    @property
    def listed(self) -> int:
        """How many dots the group's context lists one by one (not as a version vector)."""
        return len(self._ctx._cloud)

    def build(self) -> T:
        """The joined delta of every write added: a new delta, independent of the replica."""
        return self._replica._extract(self._names, self._ctx.copy())


def write_in_place(replica: CRDT, path: NestedPath, in_place: WriteInPlace, arg: Any) -> bool:
    """Write ``in_place(nested, arg)`` to the nested replica at ``path`` when it is held,
    recording nothing; False, with nothing written, where it is not.

    For a replica whose writes no one needs as deltas (a node with no peer and
    no log): a held nested replica passed ``ORMap.update``'s checks when it
    was made, and a write that leaves an entry cannot empty it, so the write
    is ``update``'s without the deltas thrown away.
    """
    nested = _held_at(replica, _frozen(path))
    if nested is None:
        return False
    in_place(nested, arg)
    return True


def _frozen(path: NestedPath) -> tuple[tuple[Hashable, str], ...]:
    """``path``'s keys frozen as ``ORMap.update`` freezes them, each with its type's tag."""
    return tuple((freeze_key(key), kind.TAG) for key, kind in path)


def _held_at(replica: Any, steps: tuple[tuple[Hashable, str], ...]) -> Any:
    """The nested replica under ``steps`` (frozen keys and tags) from ``replica``, or None."""
    for frozen, tag in steps:
        fields = replica._fields.get(frozen)
        replica = fields.get(tag) if fields else None
        if replica is None:
            return None
    return replica
