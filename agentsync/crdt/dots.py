"""Dots, causal contexts, and the join of dot stores.

A *dot* ``(replica_id, n)`` names the n-th event of a replica. A causal
context is the set of dots a replica has seen, kept as a version vector plus
a *dot cloud* of the dots that are not contiguous yet (Almeida, Shoker and
Baquero, "Delta State Replicated Data Types", 2018, section 4).

Stores hold *entries*: tuples whose first two fields are a dot,
``(replica_id, n, *payload)``. A store keeps its entries sorted by dot, so two
equal stores are equal tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from agentsync.crdt.values import check_counter, check_replica_id

Entry = tuple[Any, ...]
"""A store entry: ``(replica_id, n, *payload)``; ``(replica_id, n)`` alone is a dot."""

InPlace = tuple[Any, tuple[str, int], tuple[Entry, ...]]
"""What a write applied in place, with no delta, records (see ``LocalGroup.step``):
the key its delta would name (ignored by a store without keys), its new dot, and
the entries whose dots it supersedes."""


BULK_CLOUD = 16
"""Above this many cloud dots, ``merge`` adds them with set operations, not one by one."""


class Dot(NamedTuple):
    """The n-th event (``counter``) made by replica ``replica_id``."""

    replica_id: str
    counter: int


class CausalContext:
    """The set of dots a replica has seen: a version vector plus a dot cloud.

    A replica's context stays compact: a cloud dot that becomes contiguous with
    the vector is folded into it, and one the vector covers is dropped. A
    delta's context holds exactly its dots, all in the cloud, because building
    it is on the hot path; ``==`` compares dot sets, so the form never matters.
    """

    __slots__ = ("_cloud", "_vv")

    def __init__(
        self,
        version_vector: Mapping[str, int] | None = None,
        cloud: Iterable[tuple[str, int]] = (),
    ) -> None:
        self._vv: dict[str, int] = {}
        self._cloud: set[tuple[str, int]] = set()
        for replica_id, n in (version_vector or {}).items():
            check_replica_id(replica_id)
            check_counter(n)
            self._vv[replica_id] = n
        for dot in cloud:
            replica_id, n = dot
            check_replica_id(replica_id)
            check_counter(n)
            self.add((replica_id, n))

    @property
    def version_vector(self) -> dict[str, int]:
        """Replica id -> the highest n such that every dot up to n was seen."""
        return dict(self._vv)

    @property
    def cloud(self) -> frozenset[Dot]:
        """The seen dots that are not contiguous with the version vector yet."""
        return frozenset(Dot(r, n) for r, n in self._cloud)

    def __contains__(self, dot: object) -> bool:
        if not isinstance(dot, tuple) or len(dot) != 2:
            return False
        replica_id, n = dot
        if type(replica_id) is not str or type(n) is not int:
            return False
        return self.has(replica_id, n)

    def has(self, replica_id: str, n: int) -> bool:
        """True when the dot ``(replica_id, n)`` has been seen."""
        return n <= self._vv.get(replica_id, 0) or (replica_id, n) in self._cloud

    def __iter__(self) -> Iterator[Dot]:
        """Every dot seen, replica by replica (the vector part can be long)."""
        for replica_id, top in sorted(self._vv.items()):
            for n in range(1, top + 1):
                yield Dot(replica_id, n)
        for replica_id, n in sorted(self._cloud):
            yield Dot(replica_id, n)

    def __eq__(self, other: object) -> bool:
        """Equal when both hold the same set of dots, however they are stored."""
        if not isinstance(other, CausalContext):
            return NotImplemented
        if self._vv == other._vv and self._cloud == other._cloud:
            return True
        mine, theirs = self._compacted(), other._compacted()
        return mine._vv == theirs._vv and mine._cloud == theirs._cloud

    def _compacted(self) -> CausalContext:
        """This context in its canonical form (a delta's context may not be)."""
        twin = self.copy()
        twin.compact()
        return twin

    def __le__(self, other: CausalContext) -> bool:
        """True when every dot of this context is in ``other`` (subset)."""
        if not isinstance(other, CausalContext):
            return NotImplemented
        their_vv = other._vv
        their_cloud = other._cloud
        for replica_id, n in self._vv.items():
            top = their_vv.get(replica_id, 0)
            if n > top:
                if n - top > len(their_cloud):
                    return False
                if any((replica_id, k) not in their_cloud for k in range(top + 1, n + 1)):
                    return False
        return all(n <= their_vv.get(r, 0) or (r, n) in their_cloud for r, n in self._cloud)

    def _minus(self, other: CausalContext, limit: int) -> CausalContext | None:
        """The dots of this context that ``other`` lacks; None if over ``limit`` must be listed.

        A version-vector entry is cheap however high it is, but the part of it
        above ``other``'s entry has to be listed dot by dot.
        """
        result = CausalContext._of_dots(set())
        their_vv = other._vv
        their_cloud = other._cloud
        cloud_ids: set[str] | None = None  # made only if needed: ``other``'s cloud can be huge
        for replica_id, n in self._vv.items():
            top = their_vv.get(replica_id, 0)
            if n <= top:
                continue
            if top == 0:
                if cloud_ids is None:
                    cloud_ids = {r for r, _ in their_cloud}
                if replica_id not in cloud_ids:
                    result._vv[replica_id] = n
                    continue
            limit -= n - top
            if limit < 0:
                return None
            missing = ((replica_id, k) for k in range(top + 1, n + 1))
            result._cloud.update(dot for dot in missing if dot not in their_cloud)
        unseen = self._cloud - their_cloud
        if unseen:
            tops = {r: their_vv.get(r, 0) for r in {dot[0] for dot in unseen}}
            result._cloud.update(dot for dot in unseen if dot[1] > tops[dot[0]])
        return result

    def _size(self) -> int:
        """How many dots this context holds."""
        return sum(self._vv.values()) + len(self._cloud)

    def compact(self) -> None:
        """Fold every cloud dot that is contiguous with the vector into it."""
        if self._cloud:
            self._refold(list(self._replica_ids()))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        cloud = sorted(self._cloud)
        return f"CausalContext({self._vv!r}, cloud={cloud!r})"

    def __bool__(self) -> bool:
        return bool(self._vv) or bool(self._cloud)

    def max_counter(self, replica_id: str) -> int:
        """The highest n seen from ``replica_id``, contiguous or not."""
        top = self._vv.get(replica_id, 0)
        for r, n in self._cloud:
            if r == replica_id and n > top:
                top = n
        return top

    def next_dot(self, replica_id: str) -> tuple[str, int]:
        """Issue and record the next dot of ``replica_id`` (the local replica).

        The issued dot is the first one after the version vector's entry, which
        a compact context never holds in its cloud; cloud dots that become
        contiguous with it fold into the vector.
        """
        vv = self._vv
        n = vv.get(replica_id, 0) + 1
        cloud = self._cloud
        if cloud and ((replica_id, n) in cloud or (replica_id, n + 1) in cloud):
            self._refold([replica_id])  # a delta's context need not be compact
            n = vv.get(replica_id, 0) + 1
            self.add((replica_id, n))
        else:  # the hot path: every write issues a dot
            vv[replica_id] = n
        return (replica_id, n)

    def add(self, dot: tuple[str, int]) -> None:
        """Record one seen dot, folding the cloud into the vector where it can."""
        replica_id, n = dot
        vv = self._vv
        top = vv.get(replica_id, 0)
        if n <= top:
            return
        if n != top + 1:
            self._cloud.add(dot)
            return
        cloud = self._cloud
        while (replica_id, n + 1) in cloud:
            n += 1
            cloud.discard((replica_id, n))
        vv[replica_id] = n

    def merge(self, other: CausalContext) -> None:
        """Join ``other`` into this context (set union), keeping it compact."""
        if other is self:
            return
        vv = self._vv
        raised = []
        for replica_id, n in other._vv.items():
            if n > vv.get(replica_id, 0):
                vv[replica_id] = n
                raised.append(replica_id)
        if raised and self._cloud:
            self._refold(raised)
        theirs = other._cloud
        if len(theirs) > BULK_CLOUD:
            self._merge_cloud(theirs)
        else:
            for dot in theirs:
                self.add(dot)

    def _merge_cloud(self, dots: set[tuple[str, int]]) -> None:
        """Add many cloud dots at once, then fold each replica's run above the vector.

        A delta group's context lists every dot of its writes (a burst of
        writes between two exchanges: thousands), and every hop merges it;
        the same result as ``add`` per dot, with set operations doing most of it.
        """
        vv = self._vv
        cloud = self._cloud
        tops = {replica_id: vv.get(replica_id, 0) for replica_id in {dot[0] for dot in dots}}
        new = {dot for dot in dots if dot[1] > tops[dot[0]]}
        if not new:
            return
        cloud |= new
        for replica_id, top in tops.items():
            n = top + 1
            if (replica_id, n) not in cloud:
                continue
            while (replica_id, n) in cloud:
                cloud.discard((replica_id, n))
                n += 1
            vv[replica_id] = n - 1

    def _refold(self, replica_ids: list[str]) -> None:
        """Drop or fold the cloud dots of replicas whose vector entry grew."""
        touched = set(replica_ids)
        mine = sorted(d for d in self._cloud if d[0] in touched)
        if not mine:
            return
        self._cloud.difference_update(mine)
        for dot in mine:
            self.add(dot)

    def copy(self) -> CausalContext:
        """An independent copy."""
        twin = CausalContext.__new__(CausalContext)
        twin._vv = dict(self._vv)
        twin._cloud = set(self._cloud)
        return twin

    @classmethod
    def _of_dots(cls, cloud: set[tuple[str, int]]) -> CausalContext:
        """A context holding exactly ``cloud`` (owned, not copied): a delta's."""
        ctx = cls.__new__(cls)
        ctx._vv = {}
        ctx._cloud = cloud
        return ctx

    def _replica_ids(self) -> set[str]:
        return set(self._vv) | {r for r, _ in self._cloud}

    def forget(self, replica_id: str, up_to: int) -> None:
        """Drop every dot ``(replica_id, n)`` with ``n <= up_to``, as if never seen.

        Pruning's last step (see ``CRDT.cleanup``): the vector entry goes, and
        so do the cloud dots up to ``up_to``. Dots above ``up_to`` stay; those
        the vector held move to the cloud, since a vector entry always starts
        at 1. ``up_to`` is an int >= 0 (0 forgets nothing).
        """
        check_replica_id(replica_id)
        check_up_to(up_to)
        self._forget(replica_id, up_to)

    def _forget(self, replica_id: str, up_to: int) -> None:
        if up_to < 1:  # the dots above stay, and (replica_id, 1) would belong in the vector
            return
        top = self._vv.pop(replica_id, 0)
        cloud = self._cloud
        if cloud:
            cloud.difference_update(
                [dot for dot in cloud if dot[0] == replica_id and dot[1] <= up_to]
            )
        if top > up_to:
            cloud.update((replica_id, n) for n in range(up_to + 1, top + 1))

    def _holds_any(self, pruned: Mapping[str, int]) -> bool:
        """True when some dot ``(r, n)`` with ``n <= pruned[r]`` is here."""
        vv = self._vv
        for replica_id, up_to in pruned.items():
            if up_to and replica_id in vv:
                return True
        if self._cloud and pruned:
            return any(n <= pruned.get(r, 0) for r, n in self._cloud)
        return False


def check_up_to(up_to: object) -> int:
    """Return ``up_to`` if it is a valid pruning bound (0 .. INT64_MAX), else raise."""
    if type(up_to) is not int:
        raise TypeError(f"up_to must be an int, not {type(up_to).__name__}")
    if up_to != 0:
        check_counter(up_to)
    return up_to


def check_vector(vector: object, what: str) -> dict[str, int]:
    """A replica id -> int >= 0 mapping (a pruning map or a stable vector), as a dict."""
    if not isinstance(vector, Mapping):
        kind = type(vector).__name__
        raise TypeError(f"{what} must be a mapping of replica id to int, not {kind}")
    checked: dict[str, int] = {}
    for replica_id, n in vector.items():
        check_replica_id(replica_id)
        if check_up_to(n):
            checked[replica_id] = n
    return checked


def dot_key(entry: Entry) -> tuple[str, int]:
    """The sort key of an entry: its dot."""
    return (entry[0], entry[1])


def join_dots(
    mine: tuple[Entry, ...],
    theirs: tuple[Entry, ...],
    my_ctx: CausalContext,
    their_ctx: CausalContext,
) -> tuple[Entry, ...]:
    """Join two dot stores (a DotSet or a DotFun) under their contexts.

    An entry survives when both sides hold its dot, or when one side holds it
    and the other side has not seen it. A dot that one side saw and dropped is
    gone: that is how removals need no tombstones.
    """
    if mine == theirs:
        return mine
    if len(mine) == 1 and len(theirs) == 1:  # a key rewritten: the common case of a join
        m, t = mine[0], theirs[0]
        if m[0] == t[0] and m[1] == t[1]:
            return mine
        keep_mine = not their_ctx.has(m[0], m[1])
        keep_theirs = not my_ctx.has(t[0], t[1])
        if keep_mine and keep_theirs:
            return (m, t) if (m[0], m[1]) < (t[0], t[1]) else (t, m)
        return mine if keep_mine else theirs if keep_theirs else ()
    if not mine:  # the common case when a delta brings a new key
        vv = my_ctx._vv
        cloud = my_ctx._cloud
        if len(theirs) == 1:
            e = theirs[0]
            if e[1] <= vv.get(e[0], 0) or (e[0], e[1]) in cloud:
                return ()
            return theirs
        return tuple(e for e in theirs if not (e[1] <= vv.get(e[0], 0) or (e[0], e[1]) in cloud))
    if not theirs:
        return tuple(e for e in mine if not their_ctx.has(e[0], e[1]))
    their_dots = {(e[0], e[1]) for e in theirs}
    kept = [e for e in mine if (e[0], e[1]) in their_dots or not their_ctx.has(e[0], e[1])]
    my_dots = {(e[0], e[1]) for e in mine}
    kept.extend(e for e in theirs if (e[0], e[1]) not in my_dots and not my_ctx.has(e[0], e[1]))
    if len(kept) > 1:
        kept.sort(key=dot_key)
    return tuple(kept)


@dataclass(slots=True)
class Cut:
    """What ``CRDT.unseen_part`` threads through nested stores."""

    my_ctx: CausalContext
    their_ctx: CausalContext
    full: bool
    """The incoming side is a full state: visit local keys it does not name."""
    keep_all: bool
    """It removed dots never seen here: name every key it names."""
    part_ctx: CausalContext
    """The context the part is built on."""
    removed: set[tuple[str, int]] = field(default_factory=set)
    """The local dots the incoming side removes."""


def novel_dots(
    mine: tuple[Entry, ...], theirs: tuple[Entry, ...], cut: Cut
) -> tuple[tuple[Entry, ...], bool]:
    """What joining ``theirs`` into ``mine`` would change, as ``join_dots`` sees it.

    Returns the entries of ``theirs`` that this replica has not seen, and
    whether the join drops any of ``mine``; those dots go into ``cut.removed``.
    """
    my_ctx = cut.my_ctx
    kept = tuple(e for e in theirs if not my_ctx.has(e[0], e[1]))
    drops = False
    if mine:
        their_dots = {(e[0], e[1]) for e in theirs}
        for e in mine:
            dot = (e[0], e[1])
            if dot not in their_dots and cut.their_ctx.has(e[0], e[1]):
                cut.removed.add(dot)
                drops = True
    return kept, drops


def stripped(entries: tuple[Entry, ...], pruned: Mapping[str, int]) -> tuple[Entry, ...]:
    """``entries`` but those whose dot ``(r, n)`` has ``n <= pruned[r]`` (itself if none)."""
    if not any(e[1] <= pruned.get(e[0], 0) for e in entries):
        return entries
    return tuple(e for e in entries if e[1] > pruned.get(e[0], 0))


def collapsed(
    entries: tuple[Entry, ...],
    gone: str,
    up_to: int,
    *,
    owner: str,
    issue: Callable[[], tuple[str, int]],
    dot_set: bool,
    seen: set[tuple[str, int]],
) -> tuple[tuple[Entry, ...], tuple[Entry, ...]] | None:
    """Re-issue the entries of ``gone`` (dots up to ``up_to``) under new dots of ``owner``.

    Returns the store's new entries and the re-issued ones, or None when
    ``gone`` has no entry here; the dots replaced and the new ones go into
    ``seen`` (the collapse delta's cloud). In a DotFun (``dot_set`` false)
    each entry keeps its payload under a dot of its own. In a DotSet the
    dots carry no payload: they go without a new one when ``owner`` holds a
    dot here already, else one new dot stands for all of them.
    """
    old = [e for e in entries if e[0] == gone and e[1] <= up_to]
    if not old:
        return None
    kept = [e for e in entries if not (e[0] == gone and e[1] <= up_to)]
    issued: list[Entry]
    if dot_set:
        issued = [] if any(e[0] == owner for e in kept) else [issue()]
    else:
        issued = [(owner, issue()[1], *e[2:]) for e in old]
    seen.update((e[0], e[1]) for e in old)
    seen.update((e[0], e[1]) for e in issued)
    kept.extend(issued)
    kept.sort(key=dot_key)
    return tuple(kept), tuple(issued)
