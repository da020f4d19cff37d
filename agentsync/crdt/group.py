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

from typing import Any, Generic, TypeVar

from agentsync.crdt.base import CRDT
from agentsync.crdt.dots import CausalContext

T = TypeVar("T", bound=CRDT)


class LocalGroup(Generic[T]):
    """The join of ``replica``'s deltas added here, built on demand with ``build``.

    Add only deltas the replica issued, in any order, and build the group
    before any of them is sent: merges into the replica in between are fine.
    """

    __slots__ = ("_ctx", "_names", "_replica", "writes")

    def __init__(self, replica: T) -> None:
        self._replica = replica
        self._names: Any = replica._no_names()
        self._ctx = CausalContext._of_dots(set())
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

    @property
    def listed(self) -> int:
        """How many dots the group's context lists one by one (not as a version vector)."""
        return len(self._ctx._cloud)

    def build(self) -> T:
        """The joined delta of every write added: a new delta, independent of the replica."""
        return self._replica._extract(self._names, self._ctx.copy())
