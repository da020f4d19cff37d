"""Registers: MVRegister keeps every concurrent value, LWWRegister picks one.

Both are DotFuns: a write issues a dot and supersedes every entry it saw, so
only concurrent writes coexist. The MVRegister shows them all; the
LWWRegister shows the one with the greatest (HLC timestamp, replica id).
"""

from __future__ import annotations

from typing import Any

from agentsync.crdt.base import Clocked, FlatStore
from agentsync.crdt.codec import Reader, Writer
from agentsync.crdt.dots import CausalContext, Entry, InPlace
from agentsync.crdt.hlc import HybridLogicalClock
from agentsync.crdt.values import INT64_MAX, Value, freeze


class MVRegister(FlatStore):
    """A multi-value register: ``value`` is a tuple of the concurrent values.

    The tuple is ordered by the writes' dots (replica id, then counter), so
    every replica shows the same order; equal values appear once.
    """

    __slots__ = ()
    TAG = "mv"

    @property
    def value(self) -> tuple[Value, ...]:
        """The values of the concurrent writes, deduplicated, in dot order."""
        shown: list[Value] = []
        for entry in self._entries:
            if entry[2] not in shown:
                shown.append(entry[2])
        return tuple(shown)

    def set(self, value: object) -> MVRegister:
        """Write ``value``, superseding every value seen; return the delta."""
        return self._replace(*self._written(value))

    def _set_in_place(self, value: object) -> InPlace:
        """``set`` without its delta (``LocalGroup.step``)."""
        return self._replace_in_place(*self._written(value))

    def _written(self, value: object) -> tuple[Entry, tuple[Entry, ...]]:
        """The entry writing ``value`` makes under a new dot, and those it supersedes."""
        frozen = freeze(value)
        dot = self._issue()
        return (dot[0], dot[1], frozen), self._entries

    def _encode_body(self, writer: Writer) -> Any:
        return [*writer.dot_columns(self._entries), [e[2] for e in self._entries]]

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        runs, counters, values = reader.columns(body, 3)
        dots = reader.dots(runs, counters)
        values = reader.list_of(values, len(dots), "values")
        blank._entries = reader.sorted_entries(
            [(r, n, reader.value(v)) for (r, n), v in zip(dots, values, strict=True)]
        )


def lww_rank(entry: Entry) -> tuple[int, str]:
    """Last-writer-wins order of ``(replica_id, n, timestamp, value)`` entries."""
    return (entry[2], entry[0])


def lww_winner(entries: tuple[Entry, ...]) -> Entry:
    """The entry that last-writer-wins picks among concurrent ones."""
    if len(entries) == 1:
        return entries[0]
    return max(entries, key=lww_rank)


def newest_unseen(entries: Any, seen: CausalContext) -> int:
    """The greatest timestamp among LWW entries whose dot ``seen`` lacks."""
    newest = 0
    for entry in entries:
        if entry[2] > newest and not seen.has(entry[0], entry[1]):
            newest = entry[2]
    return newest


class LWWRegister(Clocked, FlatStore):
    """A last-writer-wins register, timestamped by a hybrid logical clock.

    A write made after merging another replica's write always wins, even when
    the local wall clock is behind. Among concurrent writes the greatest
    (timestamp, replica id) wins. ``clock`` is a wall clock in nanoseconds,
    or a HybridLogicalClock to share with other replicas of the same agent.
    """

    __slots__ = ("_hlc",)
    TAG = "lr"

    _hlc: HybridLogicalClock

    def _init_store(self, hlc: HybridLogicalClock | None, depth: int) -> None:
        self._entries = ()
        if hlc is not None:
            self._hlc = hlc

    @property
    def value(self) -> Value:
        """The winning value, or None before the first write."""
        if not self._entries:
            return None
        return lww_winner(self._entries)[3]

    def set(self, value: object) -> LWWRegister:
        """Write ``value`` with a fresh HLC timestamp and return the delta."""
        return self._replace(*self._written(value))

    def _set_in_place(self, value: object) -> InPlace:
        """``set`` without its delta (``LocalGroup.step``)."""
        return self._replace_in_place(*self._written(value))

    def _written(self, value: object) -> tuple[Entry, tuple[Entry, ...]]:
        """The entry writing ``value`` makes under a new dot and timestamp, and those it
        supersedes."""
        frozen = freeze(value)
        dot = self._issue()
        return (dot[0], dot[1], self._hlc.now(), frozen), self._entries

    def _newest_ts(self, seen: CausalContext) -> int:
        return newest_unseen(self._entries, seen)

    def _encode_body(self, writer: Writer) -> Any:
        entries = self._entries
        return [
            *writer.dot_columns(entries),
            [e[2] for e in entries],
            [e[3] for e in entries],
        ]

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        runs, counters, stamps, values = reader.columns(body, 4)
        dots = reader.dots(runs, counters)
        stamps = reader.list_of(stamps, len(dots), "timestamps")
        values = reader.list_of(values, len(dots), "values")
        blank._entries = reader.sorted_entries(
            [
                (r, n, reader.int_in(ts, 0, INT64_MAX, "timestamp"), reader.value(v))
                for (r, n), ts, v in zip(dots, stamps, values, strict=True)
            ]
        )
