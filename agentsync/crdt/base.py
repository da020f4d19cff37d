"""The contract every CRDT implements, and the two shapes their stores take.

Every type here is a *causal* delta-state CRDT: a dot store paired with a
causal context (Almeida et al. 2018, section 5). That uniformity is what lets
an ORMap nest any type under one shared context, with reset-remove.

Every change issues a dot, removals included (a remove's own dot is stored
nowhere), so two replicas that have seen the same dots hold the same state.
The sync layer relies on that to compare replicas by their contexts.

Deltas are instances of the same type with ``_delta`` set. A delta names every
key whose dots its context covers, with an empty dot tuple (a *marker*) for
keys it removed. Merging a delta therefore visits only the keys it names,
O(delta) rather than O(state); merging a full state visits every key.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Hashable, Iterator, Mapping
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agentsync.crdt.dots import (
    CausalContext,
    Cut,
    Entry,
    InPlace,
    check_up_to,
    check_vector,
    collapsed,
    dot_key,
    join_dots,
    novel_dots,
    stripped,
)
from agentsync.crdt.hlc import HybridLogicalClock, WallClock, as_hlc
from agentsync.crdt.values import check_replica_id

if TYPE_CHECKING:
    from agentsync.crdt.codec import Reader, Writer

T = TypeVar("T", bound="CRDT")

_new = object.__new__

UNSEEN_DOTS_LIMIT = 1 << 16
"""The most unseen dots ``unseen_part`` lists one by one before it gives up cutting."""


def bare_delta(kind: type[T], replica_id: str, cloud: set[tuple[str, int]]) -> T:
    """A delta of ``kind`` whose context is exactly ``cloud``, with no store yet.

    Mutators are the hot path, so they build their delta with this and set the
    store themselves, skipping the generic store set-up of ``_blank``.
    """
    delta = _new(kind)
    delta._rid = replica_id
    delta._delta = True
    delta._ctx = CausalContext._of_dots(cloud)
    return delta


Store = TypeVar("Store", bound="KeyedStore")
Flat = TypeVar("Flat", bound="FlatStore")

_dot_of = itemgetter(0, 1)
"""An entry's dot (an entry of a DotSet is its dot already)."""


class CRDT(abc.ABC):
    """A delta-state CRDT replica: mutators apply at once and return a delta.

    ``merge`` joins a full state or a delta of the same type, in place; the
    join is commutative, associative and idempotent. ``==`` compares the
    replicated state, not the local replica id.
    """

    __slots__ = ("_ctx", "_delta", "_rid")

    TAG: ClassVar[str]
    """The type's tag on the wire."""
    _DOT_SET: ClassVar[bool] = False
    """A store's entries are bare dots (a DotSet), not dots with a payload."""

    def __init__(self, replica_id: str) -> None:
        self._rid = check_replica_id(replica_id)
        self._ctx = CausalContext()
        self._delta = False
        self._init_store(None, 0)

    # -- construction used inside the package ---------------------------------

    @classmethod
    def _blank(
        cls: type[T],
        replica_id: str,
        ctx: CausalContext,
        hlc: HybridLogicalClock | None,
        depth: int,
    ) -> T:
        """An empty replica on a given (possibly shared) context, unchecked."""
        obj = cls.__new__(cls)
        obj._rid = replica_id
        obj._ctx = ctx
        obj._delta = False
        obj._init_store(hlc, depth)
        return obj

    @abc.abstractmethod
    def _init_store(self, hlc: HybridLogicalClock | None, depth: int) -> None:
        """Set the empty store (and the clock, for the types that keep one)."""

    def _delta_shell(self: T, dots: Any) -> T:
        """An empty delta from this replica whose context holds exactly ``dots``."""
        return self._part(CausalContext._of_dots(set(dots)))

    def _clock(self) -> HybridLogicalClock | None:
        return None

    def _depth(self) -> int:
        return 0

    def _ensure_replica(self) -> None:
        """Refuse to write to a delta: it is not a replica and issues no dots."""
        if self._delta:
            raise TypeError("this is a delta, not a replica: merge it into a replica to write")

    def _issue(self) -> tuple[str, int]:
        """The next dot of this replica."""
        self._ensure_replica()
        return self._ctx.next_dot(self._rid)

    # -- public contract ------------------------------------------------------

    @property
    def replica_id(self) -> str:
        """The id of the replica that owns this state (and issues its dots)."""
        return self._rid

    @property
    def context(self) -> CausalContext:
        """A copy of the causal context: every dot this replica has seen."""
        return self._ctx.copy()

    @property
    def is_delta(self) -> bool:
        """True for a delta (or delta group) returned by a mutator."""
        return self._delta

    @property
    @abc.abstractmethod
    def value(self) -> Any:
        """The plain Python value of the replicated state."""

    def merge(self: T, other: T) -> None:
        """Join ``other`` (a full state or a delta of the same type) into this one.

        Raises TypeError for another type, and ValueError (ClockSkewError) when
        ``other`` carries a timestamp too far in the future; either way before
        anything changes.
        """
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        if other is self:
            return
        newest = other._newest_ts(self._ctx)
        if newest:
            self._check_ts(newest)
        full = not other._delta
        self._join(other, self._ctx, other._ctx, full, self._delta)
        self._ctx.merge(other._ctx)
        if self._delta and full:  # a delta joined with a full state is a full state
            self._ctx.compact()
            self._drop_markers()
        if newest and not self._delta:  # a delta shares its origin's clock: leave it be
            self._observe_ts(newest)

    def _absorb(self: T, later: T) -> None:
        """Join ``later``, a delta of the same type whose checks already passed.

        ``merge`` without its checks: the sync layer joins buffered deltas
        into one interval with this, and the checks (the type, the timestamps
        against the skew bound) held when each of them was merged or written.
        """
        self._join(later, self._ctx, later._ctx, False, True)
        self._ctx.merge(later._ctx)

    def unseen_part(self: T, other: T) -> T | None:
        """The part of ``other`` this replica has not seen; None when it adds nothing.

        Merging the part here has the same effect as merging ``other``; the
        sync layer buffers and forwards only this part of what it receives
        (RR, Enes et al. 2019). The part is a delta, except when ``other`` is
        a full state that removed something this replica never saw: which keys
        such a removal emptied is unknowable, so ``other`` is returned whole;
        so it is when ``other`` holds more than ``UNSEEN_DOTS_LIMIT`` unseen
        dots above this replica's version vector, which would be dear to list.
        """
        if type(other) is not type(self):
            raise TypeError(f"cannot compare a {type(other).__name__} with a {type(self).__name__}")
        mine = self._ctx
        theirs = other._ctx
        new = theirs._minus(mine, UNSEEN_DOTS_LIMIT)
        if new is None:  # too many to list: the whole is a correct part too
            return other.copy()
        stored_new = sum(1 for dot in other._dots() if not mine.has(dot[0], dot[1]))
        keep_all = new._size() > stored_new  # it removed dots this replica never saw
        if keep_all and not other._delta:
            return other.copy()
        cut = Cut(mine, theirs, not other._delta, keep_all, new)
        part = other._novel(self, cut)
        for dot in cut.removed:
            new.add(dot)
        if not new:
            return None
        if part is None:  # pragma: no cover  # new dots are kept entries or removals
            part = other._marker(new)
        return part

    def copy(self: T) -> T:
        """An independent replica with the same id and state."""
        clock = self._clock()
        return self._twin(self._ctx.copy(), clock.copy() if clock else None)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, CRDT)
        return self._ctx == other._ctx and self._store_eq(other)

    __hash__ = None  # type: ignore[assignment]  # replicas are mutable

    def __repr__(self) -> str:
        kind = "delta" if self._delta else "replica"
        return f"<{type(self).__name__} {kind} {self._rid!r}: {self.value!r}>"

    # -- pruning (docs/crdts.md, "Pruning") -------------------------------------

    def replica_ids(self) -> set[str]:
        """Every replica id this state mentions, in its causal context or its store.

        The context's ids are all of them: every stored dot is in the context
        (``decode`` refuses a store dot the context lacks).
        """
        return self._ctx._replica_ids()

    def collapse(self: T, replica_id: str) -> T:
        """Take over the entries of ``replica_id``, a replica that left; return the delta.

        The first step of pruning a departed replica (Akka's pruning), run by
        one live replica, the *owner*, which is this one. Every entry of
        ``replica_id`` this state holds, up to ``up_to`` =
        ``self.context.version_vector[replica_id]`` (the dots it saw without
        a gap, read before collapsing), is written again under a new dot of
        this replica, with the same payload: a counter's contribution, a
        register's value and timestamp, a set element, an enable. An element
        or flag that this replica already holds a dot of just loses the other
        one; a counter holds this replica's contribution in two entries until
        its next increment folds them. Entries above ``up_to`` (seen past a
        gap) stay as they are. The delta is an ordinary delta of this
        replica's writes: every replica merges it, then calls
        ``cleanup(replica_id, up_to)``. Exactly one owner may collapse a
        replica, or counters would count its contribution once per owner.

        Raises TypeError on a delta and ValueError for this replica's own id.
        The delta is empty when ``replica_id`` has no entry here.
        """
        self._ensure_replica()
        check_replica_id(replica_id)
        if replica_id == self._rid:
            raise ValueError(f"replica {replica_id!r} cannot collapse its own entries")
        up_to = self._ctx._vv.get(replica_id, 0)
        delta = self._delta_shell(())
        if up_to:
            self._collapse(replica_id, up_to, delta)
        return delta

    def cleanup(self, replica_id: str, up_to: int) -> None:
        """Forget the dots ``(replica_id, n)`` with ``n <= up_to``, in place.

        Run once the owner's ``collapse`` delta has been merged here: the
        entries of ``replica_id`` up to ``up_to`` (dead ones, or live ones the
        collapse re-issued) and its dots up to ``up_to`` in the context go.
        Its entries and dots above ``up_to`` stay: it wrote them after the
        owner collapsed it, so they are news. From now on pass whatever
        arrives through ``cleaned`` before merging it.

        Raises ValueError for this replica's own id: forgetting its own dots
        would make it issue them again.
        """
        check_replica_id(replica_id)
        check_up_to(up_to)
        if replica_id == self._rid:
            raise ValueError(f"replica {replica_id!r} cannot forget its own dots")
        if up_to:
            self._strip({replica_id: up_to})
            self._ctx._forget(replica_id, up_to)

    def cleaned(self: T, pruned: Mapping[str, int]) -> T | None:
        """This state or delta without the dots ``(r, n)`` with ``n <= pruned[r]``.

        ``pruned`` maps each replica cleaned up at the receiver to its
        ``up_to``. Pass everything that arrives through this before merging
        it, or entries of a pruned replica that its ``cleanup`` forgot would
        come back. Returns None when nothing is left, ``self`` itself (no
        copy) when it holds none of those dots, and a new object otherwise.
        """
        bounds = check_vector(pruned, "pruned")
        if not self._ctx:
            return None
        if not self._ctx._holds_any(bounds):
            return self
        twin = self.copy()
        twin._strip(bounds)
        for replica_id, up_to in bounds.items():
            twin._ctx._forget(replica_id, up_to)
        if not twin._ctx and twin._is_empty():
            return None
        return twin

    def prune_stable(self, stable: Mapping[str, int]) -> int:
        """Drop what was kept only for updates every replica has seen; return how many.

        ``stable`` is a version vector of causally stable dots: every replica
        has seen each dot ``(r, n)`` with ``n <= stable[r]``, and this replica
        has seen every dot that any replica issued before it saw them (take
        the pointwise minimum of the replicas' version vectors, each one
        merged here first). Only an LWWMap keeps anything for that: a
        tombstone that is the only entry under its key; elsewhere this
        returns 0. Raises TypeError on a delta.
        """
        self._ensure_replica()
        return self._prune(check_vector(stable, "stable"), False)

    # -- the store protocol (what an ORMap needs from what it nests) ---------

    @abc.abstractmethod
    def _join(
        self,
        other: Any,
        my_ctx: CausalContext,
        their_ctx: CausalContext,
        full: bool,
        keep_markers: bool,
    ) -> None:
        """Join ``other``'s store into this one, given both *pre-join* contexts.

        ``full``: ``other`` is a full state, so its context may cover dots of
        keys it does not name, and every local key must be visited.
        ``keep_markers``: this is a delta, so keys left empty stay as markers.
        """

    @abc.abstractmethod
    def _is_empty(self) -> bool:
        """True when the store holds no dot (markers aside)."""

    @abc.abstractmethod
    def _store_eq(self, other: Any) -> bool:
        """Equality of stores, markers ignored."""

    @abc.abstractmethod
    def _twin(self: T, ctx: CausalContext, hlc: HybridLogicalClock | None) -> T:
        """A deep copy of this replica on ``ctx`` (and ``hlc``)."""

    @abc.abstractmethod
    def _dots(self) -> Iterator[tuple[str, int]]:
        """Every dot the store holds."""

    @abc.abstractmethod
    def _marker(self: T, ctx: CausalContext) -> T:
        """A delta store naming every key of this one, all empty: a reset."""

    @abc.abstractmethod
    def _drop_markers(self) -> None:
        """Become a full state: clear the delta flag and remove empty markers."""

    @abc.abstractmethod
    def _novel(self: T, mine: T | None, cut: Cut) -> T | None:
        """The delta store of what joining this store into ``mine`` would change.

        Keeps the entries not seen here and names the keys whose entries the
        join would drop; with ``cut.keep_all``, names every key this store
        names. The part is built on ``cut.part_ctx``; None if it names nothing.
        """

    @classmethod
    @abc.abstractmethod
    def _no_names(cls) -> Any:
        """An empty record of the keys deltas of this type name (see ``LocalGroup``)."""

    @abc.abstractmethod
    def _name_into(self, names: Any) -> Any:
        """Add the keys this delta names to ``names`` (from ``_no_names``); return it."""

    @abc.abstractmethod
    def _extract(self: T, names: Any, ctx: CausalContext) -> T:
        """A delta on ``ctx`` of this replica's entries whose dots ``ctx`` holds.

        It names every key in ``names`` (empty where nothing is left), so that
        merging it drops what the recorded deltas overwrote or removed there.
        """

    @abc.abstractmethod
    def _collapse(self, gone: str, up_to: int, part: Any) -> bool:
        """Re-issue the entries of ``gone`` up to ``up_to`` under this replica's new dots.

        Fills ``part`` (a delta store on the collapse delta's context) with
        the re-issued entries and adds them and the dots they replace to that
        context; returns whether anything changed.
        """

    @abc.abstractmethod
    def _strip(self, pruned: Mapping[str, int]) -> None:
        """Drop the entries whose dot ``(r, n)`` has ``n <= pruned[r]``, in place.

        A delta keeps the keys it emptied as markers; a full state drops them.
        """

    def _collapsed(
        self, entries: tuple[Entry, ...], gone: str, up_to: int, seen: set[tuple[str, int]]
    ) -> tuple[tuple[Entry, ...], tuple[Entry, ...]] | None:
        """``collapsed`` on one dot store of this replica (new entries, re-issued ones)."""
        return collapsed(
            entries,
            gone,
            up_to,
            owner=self._rid,
            issue=self._issue,
            dot_set=self._DOT_SET,
            seen=seen,
        )

    def _prune(self, stable: Mapping[str, int], nested: bool) -> int:
        """Drop stable tombstones (LWWMap); ``nested``: inside an ORMap. Returns how many."""
        return 0

    def _part(self: T, part_ctx: CausalContext) -> T:
        """An empty delta of this type on ``part_ctx`` (a shell, a marker or a cut part)."""
        part = self._blank(self._rid, part_ctx, self._clock(), self._depth())
        part._delta = True
        return part

    def _newest_ts(self, seen: CausalContext) -> int:
        """The newest timestamp among entries whose dot ``seen`` lacks (0: none)."""
        return 0

    def _check_ts(self, timestamp: int) -> None:  # noqa: B027  # optional hook
        """Refuse a remote timestamp (only the clocked types have a bound)."""

    def _observe_ts(self, timestamp: int) -> None:  # noqa: B027  # optional hook
        """Advance the clock past a merged timestamp (clocked types only)."""

    @abc.abstractmethod
    def _encode_body(self, writer: Writer) -> Any:
        """The type-specific part of the wire form."""

    @classmethod
    @abc.abstractmethod
    def _decode_body(cls: type[T], reader: Reader, body: Any, blank: T) -> None:
        """Fill ``blank`` from a wire body; raise DecodeError when malformed."""


class Clocked(CRDT):
    """What the types that stamp writes share: a hybrid logical clock.

    ``clock`` is a wall clock returning nanoseconds, or a HybridLogicalClock
    to share with other replicas of the same agent. Concrete classes declare
    the ``_hlc`` slot (two slotted bases cannot both add slots).
    """

    __slots__ = ()

    _hlc: HybridLogicalClock

    def __init__(
        self, replica_id: str, *, clock: WallClock | HybridLogicalClock = time.time_ns
    ) -> None:
        super().__init__(replica_id)
        self._hlc = as_hlc(clock)  # type: ignore[misc]  # the slot is on the concrete class

    @property
    def clock(self) -> HybridLogicalClock:
        """The hybrid logical clock that stamps this replica's writes."""
        return self._hlc

    def _clock(self) -> HybridLogicalClock:
        return self._hlc

    def _check_ts(self, timestamp: int) -> None:
        self._hlc.check(timestamp)

    def _observe_ts(self, timestamp: int) -> None:
        self._hlc.observe(timestamp)


class FlatStore(CRDT):
    """A type whose store is one DotSet or DotFun: a sorted tuple of entries."""

    __slots__ = ("_entries",)

    _entries: tuple[Entry, ...]

    def _init_store(self, hlc: HybridLogicalClock | None, depth: int) -> None:
        self._entries = ()

    def _join(
        self,
        other: Any,
        my_ctx: CausalContext,
        their_ctx: CausalContext,
        full: bool,
        keep_markers: bool,
    ) -> None:
        self._entries = join_dots(self._entries, other._entries, my_ctx, their_ctx)

    def _is_empty(self) -> bool:
        return not self._entries

    def _store_eq(self, other: Any) -> bool:
        return self._entries == other._entries  # type: ignore[no-any-return]

    def _twin(self: T, ctx: CausalContext, hlc: HybridLogicalClock | None) -> T:
        twin = self._blank(self._rid, ctx, hlc, 0)
        twin._delta = self._delta
        twin._entries = self._entries  # type: ignore[attr-defined]  # immutable
        return twin

    def _dots(self) -> Iterator[tuple[str, int]]:
        for entry in self._entries:
            yield (entry[0], entry[1])

    def _marker(self: T, ctx: CausalContext) -> T:
        return self._part(ctx)

    def _drop_markers(self) -> None:
        self._delta = False  # a flat store has no keys, hence no markers

    def _novel(self: T, mine: T | None, cut: Cut) -> T | None:
        ours = mine._entries if mine is not None else ()  # type: ignore[attr-defined]
        kept, drops = novel_dots(ours, self._entries, cut)  # type: ignore[attr-defined]
        if not (kept or drops or cut.keep_all):
            return None
        part = self._part(cut.part_ctx)
        part._entries = kept  # type: ignore[attr-defined]
        return part

    @classmethod
    def _no_names(cls) -> None:
        return None  # a flat store has no keys

    def _name_into(self, names: None) -> None:
        return None

    def _extract(self: T, names: None, ctx: CausalContext) -> T:
        part = self._part(ctx)
        has = ctx.has
        part._entries = tuple(e for e in self._entries if has(e[0], e[1]))  # type: ignore[attr-defined]
        return part

    def _collapse(self, gone: str, up_to: int, part: Any) -> bool:
        done = self._collapsed(self._entries, gone, up_to, part._ctx._cloud)
        if done is None:
            return False
        self._entries, part._entries = done
        return True

    def _strip(self, pruned: Mapping[str, int]) -> None:
        self._entries = stripped(self._entries, pruned)

    def _put_entry(self, entry: Entry, kept: list[Entry] | None) -> None:
        """Store ``entry`` beside ``kept``; every other entry goes."""
        if kept:
            kept.append(entry)
            kept.sort(key=dot_key)
            self._entries = tuple(kept)
        else:
            self._entries = (entry,)

    def _replace_in_place(
        self, entry: Entry, dropped: tuple[Entry, ...], kept: list[Entry] | None = None
    ) -> InPlace:
        """``_replace`` without its delta (see ``InPlace``)."""
        self._put_entry(entry, kept)
        return None, (entry[0], entry[1]), dropped

    def _replace(
        self: Flat, entry: Entry, dropped: tuple[Entry, ...], kept: list[Entry] | None = None
    ) -> Flat:
        """Store ``entry`` beside ``kept`` (the rest goes), superseding ``dropped``.

        Returns the delta: ``entry`` under a context of its dot and the dropped ones.
        """
        cloud = {(entry[0], entry[1])}
        for old in dropped:
            cloud.add((old[0], old[1]))
        self._put_entry(entry, kept)
        delta = bare_delta(type(self), self._rid, cloud)
        delta._entries = (entry,)
        clock = self._clock()
        if clock is not None:
            delta._hlc = clock  # type: ignore[attr-defined]
        return delta


class KeyedStore(CRDT):
    """A type whose store maps keys to dot tuples (a DotMap of DotSets or DotFuns)."""

    __slots__ = ("_entries",)

    _entries: dict[Hashable, tuple[Entry, ...]]

    def _init_store(self, hlc: HybridLogicalClock | None, depth: int) -> None:
        self._entries = {}

    def _join(
        self,
        other: Any,
        my_ctx: CausalContext,
        their_ctx: CausalContext,
        full: bool,
        keep_markers: bool,
    ) -> None:
        mine = self._entries
        theirs: dict[Hashable, tuple[Entry, ...]] = other._entries
        for key, their_dots in theirs.items():
            old = mine.get(key, ())
            new = join_dots(old, their_dots, my_ctx, their_ctx)
            if new is not old or key not in mine:
                self._put(key, old, new, keep_markers)
        if full:
            for key in [k for k in mine if k not in theirs]:
                old = mine[key]
                new = join_dots(old, (), my_ctx, their_ctx)
                if new != old:
                    self._put(key, old, new, keep_markers)

    def _put(
        self, key: Hashable, old: tuple[Entry, ...], new: tuple[Entry, ...], keep: bool
    ) -> None:
        """Store a key's joined dots (subclasses also track what they count)."""
        if new or keep:
            self._entries[key] = new
        else:
            self._entries.pop(key, None)

    def _is_empty(self) -> bool:
        if self._delta:
            return not any(self._entries.values())
        return not self._entries

    def _store_eq(self, other: Any) -> bool:
        if not self._delta and not other._delta:
            return self._entries == other._entries  # type: ignore[no-any-return]
        mine = {k: v for k, v in self._entries.items() if v}
        theirs = {k: v for k, v in other._entries.items() if v}
        return mine == theirs

    def _twin(self: Store, ctx: CausalContext, hlc: HybridLogicalClock | None) -> Store:
        twin = self._blank(self._rid, ctx, hlc, 0)
        twin._delta = self._delta
        twin._entries = dict(self._entries)  # the dot tuples are immutable
        twin._after_load()
        return twin

    def _dots(self) -> Iterator[tuple[str, int]]:
        for dots in self._entries.values():
            for entry in dots:
                yield (entry[0], entry[1])

    def _marker(self: Store, ctx: CausalContext) -> Store:
        marker = self._part(ctx)
        marker._entries = dict.fromkeys(self._entries, ())
        return marker

    def _drop_markers(self) -> None:
        self._delta = False
        for key in [k for k, v in self._entries.items() if not v]:
            del self._entries[key]
        self._after_load()

    def _novel(self: Store, mine: Store | None, cut: Cut) -> Store | None:
        theirs = self._entries
        ours = mine._entries if mine is not None else {}
        keys = list(theirs)
        if cut.full:
            keys += [key for key in ours if key not in theirs]
        entries: dict[Hashable, tuple[Entry, ...]] = {}
        for key in keys:
            kept, drops = novel_dots(ours.get(key, ()), theirs.get(key, ()), cut)
            if kept or drops or cut.keep_all:
                entries[key] = kept
        if not (entries or cut.keep_all):
            return None
        part = self._part(cut.part_ctx)
        part._entries = entries
        part._after_load()
        return part

    @classmethod
    def _no_names(cls) -> set[Hashable]:
        return set()

    def _name_into(self, names: set[Hashable]) -> set[Hashable]:
        names.update(self._entries)
        return names

    def _extract(self: Store, names: set[Hashable], ctx: CausalContext) -> Store:
        part = self._part(ctx)
        mine = self._entries
        if type(part)._put is KeyedStore._put:  # nothing counted: a row may go in as it is
            rows = {key: mine.get(key, ()) for key in names}
            held = chain.from_iterable(rows.values())
            if ctx._cloud.issuperset(held if self._DOT_SET else map(_dot_of, held)):
                # a group of this replica's own writes, the hot case: ctx lists every dot
                # still held, so every row is kept whole, checked in C, not dot by dot
                part._entries = rows
                return part
        has = ctx.has
        put = part._put
        for key in names:
            dots: tuple[Entry, ...] = mine.get(key, ())
            kept: tuple[Entry, ...]
            if len(dots) == 1:  # a key one write set, the common case: no generator
                kept = dots if has(dots[0][0], dots[0][1]) else ()
            else:
                kept = tuple(e for e in dots if has(e[0], e[1]))
            put(key, (), kept, True)
        return part

    def _collapse(self, gone: str, up_to: int, part: Any) -> bool:
        seen = part._ctx._cloud
        for key, dots in list(self._entries.items()):
            done = self._collapsed(dots, gone, up_to, seen)
            if done is None:
                continue
            new, part._entries[key] = done  # a marker when nothing was re-issued
            self._put(key, dots, new, False)
        if not part._entries:
            return False
        part._after_load()
        return True

    def _strip(self, pruned: Mapping[str, int]) -> None:
        keep = self._delta
        for key, dots in list(self._entries.items()):
            new = stripped(dots, pruned)
            if new is not dots:
                self._put(key, dots, new, keep)

    def _after_load(self) -> None:
        """Recompute derived counts after the store was filled wholesale."""

    def _live_keys(self) -> Iterator[Hashable]:
        """Keys that hold at least one dot."""
        if self._delta:
            return (k for k, v in self._entries.items() if v)
        return iter(self._entries)
