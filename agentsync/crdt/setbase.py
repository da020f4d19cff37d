"""What GSet and ORSet share: the read side and the wire body of a DotMap of DotSets."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any, TypeVar

from agentsync.crdt.base import KeyedStore, bare_delta
from agentsync.crdt.codec import Reader, Writer
from agentsync.crdt.dots import Entry, InPlace
from agentsync.crdt.values import check_many, freeze_key, stored_form

S = TypeVar("S", bound="SetBase")


_NO_DOT = ("", 0)
"""Sorts before every dot: replica ids are never empty."""


def _first_dot(row: tuple[Hashable, tuple[Entry, ...]]) -> Entry:
    """The order of a set's rows on the wire: by their first dot (none first).

    The dot itself, not a tuple of it: a level less to compare halves a sort.
    """
    dots = row[1]
    return dots[0] if dots else _NO_DOT


class SetBase(KeyedStore):
    """A set whose elements map to the dots of their live adds."""

    __slots__ = ()
    _DOT_SET = True

    @property
    def value(self) -> frozenset[Hashable]:
        """The elements, as a frozenset."""
        return frozenset(self._live_keys())

    def __contains__(self, element: object) -> bool:
        try:
            return bool(self._entries.get(element))
        except TypeError:  # unhashable: a list, say, stored as a tuple
            return bool(self._entries.get(stored_form(element)))

    def __len__(self) -> int:
        return len(self._entries) if not self._delta else sum(1 for _ in self._live_keys())

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._live_keys()))

    def iter_elements(self) -> Iterator[Hashable]:
        """The elements one at a time, read in place: nothing is copied.

        For a walk that may stop early over a big set (the status page's
        preview). Unlike iterating the set, which copies so that the caller
        may write meanwhile, this reads the live store: use it up or drop it
        before the next write to the set.
        """
        return self._live_keys()

    def add(self: S, element: object) -> S:
        """Add ``element`` with a new dot, superseding its observed dots.

        A new dot even when the element is present: an add concurrent with a
        remove (of the element, or of the ORMap key holding the set) wins.
        """
        if self._delta:
            self._ensure_replica()
        key, dot, old = self._add_in_place(element)
        delta = bare_delta(type(self), self._rid, {dot, *old} if old else {dot})
        delta._entries = {key: (dot,)}
        return delta

    def add_all(self: S, elements: Iterable[object]) -> S:
        """Add every element of ``elements`` as one write: one delta, for all or none.

        The same as adding the distinct elements one by one in their order
        (the same dots, the same state), but one call and one delta, which a
        peer merges whole. Every element is checked before any is added: a
        bad one raises with nothing changed. A str or bytes is refused (it
        would add its characters): add it with ``add``.
        """
        takes = "add_all takes an iterable of elements (use add() to add one)"
        frozen = dict.fromkeys(map(freeze_key, check_many(elements, takes)))  # a repeat: once
        if self._delta:
            self._ensure_replica()
        if not frozen:
            return self._delta_shell(())
        added: dict[Hashable, tuple[Entry, ...]] = {}
        cloud: set[tuple[str, int]] = set()
        add = self._add_in_place
        for element in frozen:
            key, dot, old = add(element)
            added[key] = (dot,)
            cloud.add(dot)
            cloud.update(old)
        delta = bare_delta(type(self), self._rid, cloud)
        delta._entries = added
        return delta

    def _add_in_place(self, element: object) -> InPlace:
        """``add`` on a replica, without its delta: the key, the new dot and the dots it
        supersedes, which are what the delta would name and its context (``LocalGroup.step``)."""
        key = freeze_key(element)
        dot = self._ctx.next_dot(self._rid)
        entries = self._entries
        old = entries.get(key)
        entries[key] = (dot,)
        return key, dot, old or ()

    def _encode_body(self, writer: Writer) -> Any:
        """``[keys, counts, dot runs, dot counters]``; counts is empty when all are 1."""
        if len(self._entries) == 1:  # one add's delta, the hot case
            ((key, dots),) = self._entries.items()
            if len(dots) == 1:
                return [[key], [], [writer.replica_index(dots[0][0]), 1], [dots[0][1]]]
        # A group's adds, the next hot case: one dot a row, all of one replica. Sorting
        # their counters orders the rows as their dots would, with no key function and
        # int compares, not tuple ones (a sort of 100 rows: ~25 us -> ~4 us).
        replica = None
        by_counter: dict[int, Hashable] = {}
        for key, dots in self._entries.items():
            if len(dots) != 1:
                break
            rid, n = dots[0]
            if rid != replica:
                if replica is not None:
                    break
                replica = rid
            by_counter[n] = key
        else:
            if replica is not None and len(by_counter) == len(self._entries):  # no dot twice
                ns = sorted(by_counter)
                return [list(map(by_counter.__getitem__, ns)), [], *writer.run(replica, ns)]
        rows = sorted(self._entries.items(), key=_first_dot)
        counts = [len(dots) for _, dots in rows]
        return [
            [key for key, _ in rows],
            [] if counts.count(1) == len(counts) else counts,
            *writer.dot_columns([dot for _, dotset in rows for dot in dotset]),
        ]

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        keys, counts, runs, counters = reader.columns(body, 4)
        keys = reader.list_of(keys, None, "keys")
        dots = reader.dots(runs, counters)
        counts = reader.list_of(counts, None, "counts") or (1,) * len(keys)
        if len(counts) != len(keys):
            reader.fail("there must be one dot count per key")
        low = 0 if blank._delta else 1  # only a delta names keys it emptied
        if sum(reader.int_in(c, low, len(dots), "count") for c in counts) != len(dots):
            reader.fail("the dot counts do not match the dots")
        entries: dict[Hashable, tuple[Entry, ...]] = {}
        at = 0
        for raw, count in zip(keys, counts, strict=True):
            key = reader.key(raw)
            if key in entries:
                reader.fail("a key appears twice")
            entries[key] = reader.sorted_entries(dots[at : at + count])
            at += count
        blank._entries = entries
