"""The delta buffer: every state change under a sequence number, bounded in bytes.

Local writes accumulate in a *pending* ``LocalGroup``, which becomes an entry
(is *sealed*) when an exchange reads the buffer: a burst of writes between
two gossip rounds costs one entry, encoded once and shared by every peer. The
group records only what each write's delta names and its dots, and reads the
joined delta off the replica at the seal, so a write costs little more with
peers to feed than without (no per-write join, no per-write objects kept).
Each entry remembers the peer it came from (``origin``) so that it is never
sent back there (BP).

The same group is a durable batch's record of its writes: while ``log`` is a
list, every local group sealed is also appended to it, encoded, for the
store to commit as the batch ends, so a write is recorded once for both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentsync.crdt.codec import MIN_CLOUD_DOTS, encode, encode_decodable
from agentsync.crdt.group import LocalGroup, NestedPath, WriteInPlace
from agentsync.crdt.ormap import ORMap

SEAL_EVERY = 4096
"""The pending delta group is sealed into an entry after at most this many writes."""
MAX_LISTED_DOTS = MIN_CLOUD_DOTS // 2
"""A local delta group is sealed once its context's cloud lists this many dots.

Every write adds a dot to its delta group's context, so a burst of writes
that cancel out (add, remove, add...) makes a group of a few bytes whose
cloud lists thousands of dots. A receiver's decode refuses a cloud of more
than ``MIN_CLOUD_DOTS`` dots unless the input is large enough to justify it
(``codec.cloud_budget``): a group past that would be refused at every
exchange, for ever. Sealing here keeps every local entry decodable (the
half left over leaves room for the one write that crosses the line); what
the engine composes from entries it checks with ``codec.encode_decodable``.
"""


def due(group: LocalGroup[ORMap]) -> bool:
    """Whether a group of local writes is to be sealed: ``SEAL_EVERY`` writes or
    ``MAX_LISTED_DOTS`` listed dots (so a durable batch's blobs stay decodable on load)."""
    return group.writes >= SEAL_EVERY or group.listed >= MAX_LISTED_DOTS


@dataclass(frozen=True, slots=True)
class Entry:
    """One sealed buffer entry."""

    seq: int
    origin: str | None
    """The peer the delta came from, or None for local writes."""
    delta: ORMap
    data: bytes
    """The delta's wire form, encoded once."""
    writer: str | None
    """The one replica whose dots the delta holds, if it holds only one replica's."""


class DeltaBuffer:
    """Sequence-numbered deltas since the oldest ack that still matters.

    ``head`` is the seq of the newest change; ``floor`` is the highest seq
    that is no longer held, so an ack ``a`` is usable exactly when
    ``a >= floor``.
    """

    __slots__ = (
        "_entries", "_pending", "_replica", "bytes", "evicted", "floor", "head", "log",
        "max_bytes",
    )  # fmt: skip

    def __init__(self, max_bytes: int, replica: ORMap) -> None:
        self.max_bytes = max_bytes
        self._replica = replica
        self.head = 0
        self.floor = 0
        self.bytes = 0
        self.evicted = 0
        """How many entries the byte bound pushed out before every peer had them."""
        self._entries: deque[Entry] = deque()
        self._pending = LocalGroup(replica)
        self.log: list[bytes] | None = None
        """While a list: where each sealed local group's encoding also goes (a durable
        batch's writes, logged as it ends), and the pending group is never dropped."""

    def __len__(self) -> int:
        return len(self._entries)

    def add_local(self, delta: ORMap) -> None:
        """Note the delta of a write already applied to the replica (before it is sent)."""
        pending = self._pending
        pending.add(delta)
        if due(pending):
            self.seal()

    def step(self, path: NestedPath, in_place: WriteInPlace, arg: Any) -> bool:
        """Write a local write in place and note it, as ``add_local`` would its delta,
        where the pending group can (``LocalGroup.step``); whether it did."""
        pending = self._pending
        if not pending.step(path, in_place, arg):
            return False
        if due(pending):
            self.seal()
        return True

    def skip(self) -> None:
        """Record a change that is not buffered (no peer needs it): every ack expires."""
        if self._pending.writes or self._entries:  # each write of a node alone: nothing to clear
            self.clear()
        self.head += 1
        self.floor = self.head

    def add(self, delta: ORMap, origin: str | None, data: bytes | None = None) -> None:
        """Buffer a delta that came from ``origin`` (``data``: its encoding, if made already)."""
        self.seal()
        self._append(delta, origin, data)

    def seal(self) -> None:
        """Make the pending delta group an entry."""
        pending = self._pending
        if not pending.writes:
            return
        self._pending = LocalGroup(self._replica)
        delta = pending.build()
        log = self.log
        if log is None:
            self._append(delta, None)
            return
        data = encode_decodable(delta)
        # A group decode would refuse (writes of huge values) is logged as the whole replica.
        log.append(encode(self._replica) if data is None else data)
        self._append(delta, None, data)

    def restore(self, floor: int, entries: Iterable[tuple[ORMap, str | None, bytes]]) -> None:
        """Hold a saved session's entries, ``(delta, origin, data)`` at seqs ``floor + 1`` on.

        Whatever the buffer held goes; the byte bound applies as to any entry
        (the bound may be smaller than when the session was saved).
        """
        self.clear()
        self.head = self.floor = floor
        for delta, origin, data in entries:
            self._append(delta, origin, data)

    def _append(self, delta: ORMap, origin: str | None, data: bytes | None = None) -> None:
        self.head += 1
        writers = delta._ctx._replica_ids()
        writer = next(iter(writers)) if len(writers) == 1 else None
        entry = Entry(self.head, origin, delta, encode(delta) if data is None else data, writer)
        self._entries.append(entry)
        self.bytes += len(entry.data)
        while self.bytes > self.max_bytes and self._entries:
            self._drop_oldest()
            self.evicted += 1

    def _drop_oldest(self) -> None:
        entry = self._entries.popleft()
        self.bytes -= len(entry.data)
        self.floor = entry.seq

    def since(self, ack: int) -> list[Entry]:
        """The entries after ``ack`` (which must be at least ``floor``), oldest first."""
        entries = self._entries
        if not entries or entries[-1].seq <= ack:
            return []
        start = max(0, ack - entries[0].seq + 1)
        return [entries[i] for i in range(start, len(entries))]

    def release(self, ack: int) -> None:
        """Drop the entries every peer that matters holds (those up to ``ack``)."""
        entries = self._entries
        while entries and entries[0].seq <= ack:
            self._drop_oldest()

    def clear(self) -> None:
        """Drop everything: no peer needs any of it (a durable batch's log still gets it)."""
        if self.log is not None:
            self.seal()
        if self._pending.writes:
            self._pending = LocalGroup(self._replica)
            self.head += 1  # the dropped writes had a seq in all but name
        while self._entries:
            self._drop_oldest()
        self.floor = self.head
