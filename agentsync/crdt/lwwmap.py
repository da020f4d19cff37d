"""LWWMap: plain values under keys, last-writer-wins per key, removals included.

Each key holds a DotFun of ``(replica_id, n, timestamp, value)`` entries: a
write supersedes every entry it saw, and concurrent entries are resolved by
the greatest (HLC timestamp, replica id), exactly as in LWWRegister. A remove
is a write of a tombstone, so it takes part in last-writer-wins: a remove
made after a set wins, and a set made after a remove wins. The tombstone is
one small entry per removed key; later issues prune it once it is causally
stable.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from itertools import chain
from typing import Any

from agentsync.crdt.base import Clocked, KeyedStore, bare_delta
from agentsync.crdt.codec import Reader, Writer
from agentsync.crdt.dots import CausalContext, Entry
from agentsync.crdt.hlc import HybridLogicalClock
from agentsync.crdt.registers import lww_winner, newest_unseen
from agentsync.crdt.values import (
    INT64_MAX,
    Value,
    check_many,
    freeze,
    freeze_key,
    stored_form,
)


class _Tombstone:
    """The value of a removed key (a singleton)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<removed>"

    def __reduce__(self) -> str:
        return "TOMBSTONE"  # copies and pickles stay the one singleton that ``is`` tests for


TOMBSTONE: Any = _Tombstone()

Items = Mapping[Any, object] | Iterable[tuple[object, object]]
"""What ``set_all`` takes: a mapping, or (key, value) pairs."""

DotCloud = set[tuple[str, int]]
"""The dots a delta's context holds (spelled here, where ``set`` is a method)."""


def _is_removed(dots: tuple[Entry, ...]) -> bool:
    return bool(dots) and lww_winner(dots)[3] is TOMBSTONE


def pairs_of(items: object) -> Iterable[Any]:
    """The pairs of ``items``, a mapping or (key, value) pairs (``set_all``, ``dict.update``);
    TypeError for anything else, a str or bytes included."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return check_many(pairs, "set_all takes a mapping or (key, value) pairs")


def _frozen_items(items: object) -> list[tuple[Hashable, Value]]:
    """Every (key, value) of ``items`` in order, each checked and frozen as ``set`` does.

    All of them before any write, so a bad one changes nothing. A pair is a
    tuple or list of two: a str is refused rather than split into characters.
    """
    frozen = []
    for i, pair in enumerate(pairs_of(items)):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"item #{i} is not a (key, value) pair: {pair!r:.80}")
        frozen.append((freeze_key(pair[0]), freeze(pair[1])))
    return frozen


class LWWMap(Clocked, KeyedStore):
    """A map of plain values where the last write to a key wins.

    ``clock`` is a wall clock in nanoseconds, or a HybridLogicalClock to share.
    """

    __slots__ = ("_hlc", "_removed")

    _hlc: HybridLogicalClock
    _removed: int
    """How many stored keys are removed (their winner is a tombstone)."""

    TAG = "lm"

    def _init_store(self, hlc: HybridLogicalClock | None, depth: int) -> None:
        self._entries = {}
        self._removed = 0
        if hlc is not None:
            self._hlc = hlc

    # -- reads ----------------------------------------------------------------

    @property
    def value(self) -> dict[Hashable, Value]:
        """A dict of every present key and its value."""
        return dict(self.items())

    def __contains__(self, key: object) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __getitem__(self, key: Hashable) -> Value:
        try:
            dots = self._entries.get(key)
        except TypeError:  # unhashable: a list, say, stored as a tuple
            dots = self._entries.get(stored_form(key))
        if dots:
            value = lww_winner(dots)[3]
            if value is not TOMBSTONE:
                return value
        raise KeyError(key)

    def get(self, key: Hashable, default: Value = None) -> Value:
        """The value under ``key``, or ``default`` when it is absent."""
        try:
            return self[key]
        except KeyError:
            return default

    def __len__(self) -> int:
        if self._delta:
            return sum(1 for _ in self.keys())
        return len(self._entries) - self._removed

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.keys())

    def keys(self) -> list[Hashable]:
        """The present keys."""
        return [key for key, _ in self.items()]

    def items(self) -> list[tuple[Hashable, Value]]:
        """The present (key, value) pairs."""
        return list(self.iter_items())

    def iter_items(self) -> Iterator[tuple[Hashable, Value]]:
        """``items`` one pair at a time, read in place: nothing is copied.

        For a walk that may stop early over a big map (the status page's
        preview). It reads the live store: use it up or drop it before the
        next write to the map.
        """
        for key, dots in self._entries.items():
            if dots:
                value = lww_winner(dots)[3]
                if value is not TOMBSTONE:
                    yield key, value

    # -- mutators -------------------------------------------------------------

    def set(self, key: object, value: object) -> LWWMap:
        """Write ``value`` under ``key`` and return the delta."""
        if self._delta:
            self._ensure_replica()
        return self._write(freeze_key(key), freeze(value))

    def remove(self, key: object) -> LWWMap:
        """Remove ``key``; KeyError if it is absent."""
        if self._delta:
            self._ensure_replica()
        frozen = freeze_key(key)
        if frozen not in self:
            raise KeyError(key)
        return self._write(frozen, TOMBSTONE)

    def discard(self, key: object) -> LWWMap:
        """Remove ``key`` if present; the delta is empty otherwise."""
        if self._delta:
            self._ensure_replica()
        frozen = freeze_key(key)
        if frozen not in self:
            return self._delta_shell(())
        return self._write(frozen, TOMBSTONE)

    def set_all(self, items: Items) -> LWWMap:
        """Write every (key, value) of ``items`` as one write: one delta, for all or none.

        Exactly the ``set`` of each item in order (the same dots, the same
        HLC timestamps, the same state), but one call and one delta, which a
        peer merges whole. A repeated key is written each time, as sequential
        sets would: its later value supersedes the earlier in place, and the
        delta holds the last. Every key and value is checked before any is
        written: a bad one raises with nothing changed.
        """
        frozen = _frozen_items(items)
        if self._delta:
            self._ensure_replica()
        if not frozen:
            return self._delta_shell(())
        written: dict[Hashable, tuple[Entry, ...]] = {}
        cloud: DotCloud = set()
        write = self._write_in_place
        for key, value in frozen:
            entry, dots = write(key, value)
            written[key] = (entry,)
            cloud |= dots
        delta = bare_delta(type(self), self._rid, cloud)
        delta._entries = written
        delta._removed = 0  # a set never writes a tombstone
        delta._hlc = self._hlc
        return delta

    def _write(self, key: Hashable, value: Value) -> LWWMap:
        entry, cloud = self._write_in_place(key, value)
        delta = bare_delta(type(self), entry[0], cloud)
        delta._entries = {key: (entry,)}
        delta._removed = int(value is TOMBSTONE)
        delta._hlc = self._hlc
        return delta

    def _write_in_place(self, key: Hashable, value: Value) -> tuple[Entry, DotCloud]:
        """One write of a checked key and value, without its delta: the new entry, and
        the dots the delta's context holds (its own and those it supersedes)."""
        rid, n = self._ctx.next_dot(self._rid)
        entry = (rid, n, self._hlc.now(), value)
        entries = self._entries
        old = entries.get(key)
        entries[key] = (entry,)
        removed = value is TOMBSTONE
        cloud = {(rid, n)}
        if old:
            self._removed += removed - _is_removed(old)
            for e in old:
                cloud.add((e[0], e[1]))
        else:
            self._removed += removed
        return entry, cloud

    # -- merging --------------------------------------------------------------

    def _put(
        self, key: Hashable, old: tuple[Entry, ...], new: tuple[Entry, ...], keep: bool
    ) -> None:
        if old:
            self._removed -= _is_removed(old)
        if new:
            self._removed += _is_removed(new)
            self._entries[key] = new
        elif keep:
            self._entries[key] = new
        else:
            self._entries.pop(key, None)

    def _after_load(self) -> None:
        self._removed = sum(1 for dots in self._entries.values() if _is_removed(dots))

    # -- pruning ----------------------------------------------------------------

    def _prune(self, stable: Mapping[str, int], nested: bool) -> int:
        """Drop each tombstone that is stable and alone under its key.

        Nested in an ORMap, this map's having an entry is what shows its key
        there, even with every key removed; so it prunes only while it holds
        an entry that is not a tombstone, which no pruning anywhere drops.
        """
        entries = self._entries
        if nested and all(e[3] is TOMBSTONE for dots in entries.values() for e in dots):
            return 0
        gone = [
            key
            for key, dots in entries.items()
            if len(dots) == 1
            and dots[0][3] is TOMBSTONE
            and dots[0][1] <= stable.get(dots[0][0], 0)
        ]
        for key in gone:
            del entries[key]
        self._removed -= len(gone)
        return len(gone)

    def _newest_ts(self, seen: CausalContext) -> int:
        return newest_unseen(chain.from_iterable(self._entries.values()), seen)

    # -- wire form --------------------------------------------------------------

    def _encode_body(self, writer: Writer) -> Any:
        """Columnar rows sorted by dot: timestamps are delta-coded, values plain.

        ``[keys, dot runs, dot counters, timestamp deltas, values,
        tombstone rows, marker keys]``.
        """
        rows = sorted((entry, key) for key, dots in self._entries.items() for entry in dots)
        entries = [entry for entry, _ in rows]
        stamps = []
        previous = 0
        for entry in entries:
            stamps.append(entry[2] - previous)
            previous = entry[2]
        values = [entry[3] for entry in entries]
        removed = [i for i, value in enumerate(values) if value is TOMBSTONE]
        for i in removed:
            values[i] = None
        return [
            [key for _, key in rows],
            *writer.dot_columns(entries),
            stamps,
            values,
            removed,
            [key for key, dots in self._entries.items() if not dots],
        ]

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        keys, runs, counters, stamps, values, removed, markers = reader.columns(body, 7)
        dots = reader.dots(runs, counters)
        keys = reader.list_of(keys, len(dots), "keys")
        stamps = reader.list_of(stamps, len(dots), "timestamps")
        values = list(reader.list_of(values, len(dots), "values"))
        for row in reader.list_of(removed, None, "tombstone rows"):
            reader.int_in(row, 0, len(values) - 1, "tombstone row")
            values[row] = TOMBSTONE
        grouped: dict[Hashable, list[Entry]] = {}
        ts = 0
        for (r, n), raw_key, step, raw in zip(dots, keys, stamps, values, strict=True):
            if type(step) is not int:
                reader.fail("timestamp steps must be ints")
            ts += step
            if not 0 <= ts <= INT64_MAX:
                reader.fail(f"timestamp {ts} is out of range")
            value = raw if raw is TOMBSTONE else reader.value(raw)
            key = reader.key(raw_key)
            group = grouped.get(key)
            if group is None:
                grouped[key] = [(r, n, ts, value)]
            else:
                group.append((r, n, ts, value))
        entries: dict[Hashable, tuple[Entry, ...]] = {
            key: reader.sorted_entries(group) for key, group in grouped.items()
        }
        markers = reader.list_of(markers, None, "marker keys")
        if markers and not blank._delta:
            reader.fail("only a delta names keys it emptied")
        for raw_key in markers:
            key = reader.key(raw_key)
            if key in entries:
                reader.fail("a marker key also holds entries")
            entries[key] = ()
        blank._entries = entries
        blank._after_load()
