"""Pruning departed replicas, Akka-style: a replicated table of markers, no leader.

Sans-IO and pure: the engine passes the time, the members and its state in,
and carries out what ``Pruning.step`` decides (``docs/crdts.md``, "Pruning").

- A replica id ``r`` is **departed**, in one node's view, when its state
  mentions ``r`` and ``r`` is neither this node's replica nor the current
  replica of any peer it still counts as a member, continuously for
  ``prune_after`` seconds.
- The lowest alive node id that sees ``r`` departed writes ``r -> Init``
  into the **prune table**, with itself as the owner. Every node that also
  sees ``r`` departed adds itself to the Init's ``seen`` and its own members
  to ``required``: a node whose replica is ``r``, or that knows ``r`` as a
  live peer's, never does, so a live replica is never pruned (its acks
  never cover ``required``).
- The owner **performs** once ``seen`` covers ``required`` and its own
  members: it collapses ``r`` into its own replica (an ordinary delta),
  forgets ``r``, and replaces the Init with ``Performed``. An Init that is
  not performed within ``prune_after`` starts a new round (fresh acks for
  today's members); one whose owner is no member any more is taken over
  by the lowest alive node in a new round.
- Every node that merges ``Performed`` waits until its context holds the
  owner's collapse (``(owner_replica, top)``), then forgets ``r`` (every dot
  of it) and filters whatever arrives through ``cleaned`` from then on. A
  message from ``r`` itself is refused ("pruned you").
- ``marker_ttl`` after a node first saw a Performed marker, it drops the
  marker and keeps ``r`` only in a Bloom filter, to recognise ``r`` if it
  ever comes back.

The table is a join-semilattice (``join_marker``): Performed beats Init; of
two Inits the higher round wins, then the lower owner, and equal ones
unite their sets; two different Performed markers for one id (two owners
collapsed it: should never happen) resolve to the lower one, and are
counted in ``conflicts``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from agentsync.crdt.values import INT64_MAX, MAX_REPLICA_ID_CHARS
from agentsync.errors import DecodeError

MAX_TABLE_ENTRIES = 256
"""The most departed replicas the table tracks at once (more wait for room)."""
MAX_SEEN = 1024
"""The most node ids one Init's ``seen`` or ``required`` holds (a membership's bound)."""
MAX_TABLE_BYTES = 1 << 20
"""The largest encoded table decoded from a peer."""
BLOOM_BITS = 1 << 16
"""The Bloom filter of expired markers: 8 KiB."""
BLOOM_HASHES = 7
"""With 65,536 bits and 7 hashes, the false-positive rate is about 1e-7 after 1,000
pruned ids, 2e-4 after 3,000 and 2e-3 after 5,000: ``(1 - e^(-7n/65536))^7``."""

_INIT = 0
_PERFORMED = 1


@dataclass(frozen=True, slots=True)
class PruningConfig:
    """When a Node prunes: how often it looks, and how long it waits.

    ``interval``: seconds between prune steps (Akka: 120 s). ``prune_after``:
    how long a replica must look departed before it is pruned (its node
    removed from membership first, after ``remove_after``). 24 h by default,
    not Akka's minutes: an edge agent may stay offline for hours, and a
    pruned one that returns starts anew, losing its writes no peer had; take
    it above the longest time an agent stays offline. ``marker_ttl``: how
    long a Performed marker is kept (Akka: 6 h).
    """

    interval: float = 120.0
    prune_after: float = 24 * 3600.0
    marker_ttl: float = 6 * 3600.0

    def __post_init__(self) -> None:
        for name in ("interval", "prune_after", "marker_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0")


@dataclass(frozen=True, slots=True)
class Init:
    """Pruning of a departed replica is proposed; ``owner`` will collapse it."""

    owner: str
    """The node that will collapse the replica."""
    round: int
    seen: frozenset[str]
    """The nodes that see the replica departed."""
    required: frozenset[str]
    """The nodes that must be in ``seen``: the members of the owner and of every acker."""


@dataclass(frozen=True, slots=True)
class Performed:
    """The owner collapsed the replica: forget it once its collapse has arrived."""

    owner: str
    owner_replica: str
    """The replica that issued the collapse delta."""
    up_to: int
    """The departed replica's dots the owner took over (its version vector entry)."""
    top: int
    """The owner replica's version vector entry right after the collapse."""


Marker = Init | Performed


def join_marker(a: Marker, b: Marker) -> Marker:
    """The join of two markers for one replica id (commutative, associative, idempotent)."""
    if isinstance(a, Performed) or isinstance(b, Performed):
        if not isinstance(b, Performed):
            return a
        if not isinstance(a, Performed):
            return b
        return min(a, b, key=_performed_key)
    ka, kb = (-a.round, a.owner), (-b.round, b.owner)
    if ka != kb:
        return a if ka < kb else b
    if a == b:
        return a
    return Init(a.owner, a.round, a.seen | b.seen, a.required | b.required)


def _performed_key(marker: Performed) -> tuple[str, str, int, int]:
    return (marker.owner, marker.owner_replica, marker.up_to, marker.top)


class Bloom:
    """A fixed-size Bloom filter of replica ids (see ``BLOOM_HASHES`` for its error)."""

    __slots__ = ("bits", "count")

    def __init__(self, bits: bytes | None = None, count: int = 0) -> None:
        self.bits = bytearray(bits if bits is not None else BLOOM_BITS // 8)
        self.count = count
        """How many ids were added."""

    @staticmethod
    def _positions(replica_id: str) -> list[int]:
        digest = hashlib.blake2b(replica_id.encode(), digest_size=8).digest()
        h1 = int.from_bytes(digest[:4], "little")
        h2 = int.from_bytes(digest[4:], "little") | 1
        return [(h1 + i * h2) % BLOOM_BITS for i in range(BLOOM_HASHES)]

    def add(self, replica_id: str) -> None:
        for bit in self._positions(replica_id):
            self.bits[bit >> 3] |= 1 << (bit & 7)
        self.count += 1

    def __contains__(self, replica_id: object) -> bool:
        if not self.count or type(replica_id) is not str:
            return False
        return all(self.bits[bit >> 3] >> (bit & 7) & 1 for bit in self._positions(replica_id))


@dataclass(frozen=True, slots=True)
class Actions:
    """What a prune step asks the engine to do to its state."""

    perform: tuple[str, ...] = ()
    """Collapse these departed replicas into this node's replica (it owns them)."""
    forget: tuple[str, ...] = ()
    """Forget these replicas: a Performed marker's collapse has arrived here."""


class Pruning:
    """One node's pruning state: the table, the replicas it forgot, and its timers."""

    def __init__(self, config: PruningConfig | None = None) -> None:
        self.config = config or PruningConfig()
        self.table: dict[str, Marker] = {}
        self.pruned: dict[str, int] = {}
        """Replica id -> the ``up_to`` its owner took over, for every replica forgotten here
        whose marker is still kept; everything arriving is cleaned of these."""
        self.bloom = Bloom()
        self.conflicts = 0
        """Different Performed markers met for one id (two owners: should never happen)."""
        self._departed_since: dict[str, float] = {}
        self._tops: dict[str, int] = {}
        """A departed-looking replica's version vector entry at the last step."""
        self._round_at: dict[str, float] = {}
        self._seen_at: dict[str, float] = {}
        self.changes = 0
        """Bumped whenever the table changes (what is sent to peers, and saved)."""

    # -- what arrives ---------------------------------------------------------------

    def is_pruned(self, replica_id: str | None) -> bool:
        """Whether ``replica_id`` was pruned here (exactly, or in the Bloom filter)."""
        return replica_id is not None and (replica_id in self.pruned or replica_id in self.bloom)

    def forget_bounds(self) -> dict[str, int]:
        """The ``cleaned`` bounds for whatever arrives: every dot of every pruned replica."""
        return dict.fromkeys(self.pruned, INT64_MAX)

    def merge(self, entries: Mapping[str, Marker]) -> bool:
        """Join a peer's table into this one; True if anything changed."""
        changed = False
        for replica_id, theirs in entries.items():
            if replica_id in self.bloom and replica_id not in self.table:
                continue  # its marker expired here: do not take it back
            mine = self.table.get(replica_id)
            if mine is None:
                if len(self.table) >= MAX_TABLE_ENTRIES:
                    continue
                joined = theirs
            else:
                joined = join_marker(mine, theirs)
                if isinstance(mine, Performed) and isinstance(theirs, Performed) and mine != theirs:
                    self.conflicts += 1
            if joined != mine:
                self.table[replica_id] = joined
                changed = True
        if changed:
            self.changes += 1
        return changed

    def _set(self, replica_id: str, marker: Marker) -> None:
        if self.table.get(replica_id) != marker:
            self.table[replica_id] = marker
            self.changes += 1

    # -- the step -------------------------------------------------------------------

    def step(
        self,
        now: float,
        *,
        me: str,
        mentioned: Collection[str],
        live: Collection[str],
        members: Collection[str],
        alive: Collection[str],
        tops: Mapping[str, int] | None = None,
        may_own: bool = True,
    ) -> Actions:
        """Decide what to init, ack, perform and expire; return what to do to the state.

        ``mentioned``: the replica ids the state holds; ``live``: this node's
        replica and the current replicas of its members; ``members``: the node
        ids of every member not removed (alive, suspect or dead), this node
        excluded; ``alive``: those of them that are alive; ``tops``: the
        state's version vector. A replica whose entry in it grew since the
        last step is still writing, whatever membership says (a node nobody
        counts as a member, behind a relay): its departure clock starts again.
        Without ``may_own`` (an observer) this node only acks: it starts no round.
        """
        config = self.config
        since = self._departed_since
        seen_tops = self._tops
        departed = {r for r in mentioned if r not in live and not self.is_pruned(r)}
        for replica_id in list(since):
            if replica_id not in departed:
                del since[replica_id]
                seen_tops.pop(replica_id, None)
        for replica_id in departed:
            top = (tops or {}).get(replica_id, 0)
            if seen_tops.get(replica_id, top) != top:
                since[replica_id] = now
            seen_tops[replica_id] = top
            since.setdefault(replica_id, now)
        ripe = {r for r in departed if now - since[r] >= config.prune_after}
        everyone = frozenset(members) | {me}
        initiator = may_own and me <= min(alive, default=me)
        perform: list[str] = []
        for replica_id in sorted(ripe | set(self.table)):
            marker = self.table.get(replica_id)
            if isinstance(marker, Performed):
                continue
            if marker is None or (marker.owner not in everyone and replica_id in ripe):
                room = marker is not None or len(self.table) < MAX_TABLE_ENTRIES
                if initiator and replica_id in ripe and room:
                    self._start_round(replica_id, marker, me, everyone, now)
                continue
            if replica_id in ripe and me not in marker.seen:
                marker = Init(marker.owner, marker.round, marker.seen | {me},
                              marker.required | everyone)  # fmt: skip
                self._set(replica_id, marker)
            if marker.owner != me or replica_id not in ripe:
                continue
            if marker.seen >= marker.required | everyone:
                perform.append(replica_id)
            elif now - self._round_at.setdefault(replica_id, now) >= config.prune_after:
                self._start_round(replica_id, marker, me, everyone, now)
        return Actions(tuple(perform), self._forgettable(now))

    def _start_round(
        self, replica_id: str, old: Init | None, me: str, everyone: frozenset[str], now: float
    ) -> None:
        self._set(replica_id, Init(me, 1 if old is None else old.round + 1,
                                   frozenset((me,)), everyone))  # fmt: skip
        self._round_at[replica_id] = now

    def _forgettable(self, now: float) -> tuple[str, ...]:
        """Performed markers not applied yet; expire the applied ones past their ttl."""
        pending = []
        for replica_id, marker in list(self.table.items()):
            if not isinstance(marker, Performed):
                continue
            if replica_id not in self.pruned:
                pending.append(replica_id)
                continue
            if now - self._seen_at.setdefault(replica_id, now) >= self.config.marker_ttl:
                del self.table[replica_id]
                del self.pruned[replica_id]
                self._seen_at.pop(replica_id, None)
                self.bloom.add(replica_id)
                self.changes += 1
        return tuple(pending)

    def performed(self, replica_id: str, marker: Performed) -> None:
        """This node collapsed ``replica_id`` as its owner and forgot it."""
        self._set(replica_id, marker)
        self.forgot(replica_id, marker.up_to)

    def forgot(self, replica_id: str, up_to: int) -> None:
        """The state forgot ``replica_id``: filter it from now on."""
        self.pruned[replica_id] = up_to
        self._departed_since.pop(replica_id, None)
        self._tops.pop(replica_id, None)
        self._round_at.pop(replica_id, None)
        self.changes += 1

    def pending(self) -> Iterable[tuple[str, Performed]]:
        """The Performed markers whose collapse has not been waited for here yet."""
        for replica_id, marker in self.table.items():
            if isinstance(marker, Performed) and replica_id not in self.pruned:
                yield replica_id, marker

    # -- the wire and the disk ----------------------------------------------------------

    def entries(self) -> tuple[tuple[str, Marker], ...]:
        """The table's rows, sorted by replica id (what a message carries)."""
        return tuple(sorted(self.table.items()))

    def save(self) -> bytes:
        """Everything to keep across a restart: the table, the pruned ids and the Bloom filter."""
        return msgpack.packb(  # type: ignore[no-any-return]
            [encode_table(self.entries()), sorted(self.pruned.items()), bytes(self.bloom.bits),
             self.bloom.count],
            use_bin_type=True,
        )  # fmt: skip

    def load(self, data: bytes) -> None:
        """Take what ``save`` made (DecodeError if it is not that)."""
        try:
            table, pruned, bits, count = msgpack.unpackb(data, raw=False, use_list=False)
        except Exception as exc:  # msgpack's errors vary; all mean malformed
            raise DecodeError(f"bad pruning state: {exc}") from None
        if type(bits) is not bytes or len(bits) != BLOOM_BITS // 8 or type(count) is not int:
            raise DecodeError("bad pruning state: the Bloom filter")
        if type(table) is not bytes or type(pruned) is not tuple:
            raise DecodeError("bad pruning state")
        self.table = dict(decode_table(table))
        self.pruned = {
            read_name(rid, "a pruned id"): read_count(n, 0, "up_to") for rid, n in pruned
        }
        self.bloom = Bloom(bits, count)
        self.changes += 1


def encode_table(entries: Iterable[tuple[str, Marker]]) -> bytes:
    """The wire form of table rows: a msgpack array of ``[id, kind, owner, ...]``."""
    return msgpack.packb(  # type: ignore[no-any-return]
        [_row(rid, marker) for rid, marker in entries], use_bin_type=True
    )


def _row(replica_id: str, marker: Marker) -> list[Any]:
    if isinstance(marker, Init):
        return [replica_id, _INIT, marker.owner, marker.round, sorted(marker.seen),
                sorted(marker.required)]  # fmt: skip
    return [replica_id, _PERFORMED, marker.owner, marker.owner_replica, marker.up_to, marker.top]


def decode_table(data: bytes) -> tuple[tuple[str, Marker], ...]:
    """Rebuild and validate a peer's table (DecodeError, and nothing else, if malformed)."""
    if len(data) > MAX_TABLE_BYTES:
        raise DecodeError(f"a prune table of {len(data)} bytes exceeds {MAX_TABLE_BYTES}")
    try:
        rows = msgpack.unpackb(
            data, raw=False, use_list=False, strict_map_key=True, max_ext_len=0, max_map_len=0,
            max_array_len=max(MAX_TABLE_ENTRIES, MAX_SEEN),
        )  # fmt: skip
    except Exception as exc:  # msgpack's errors vary by input; all mean malformed
        raise DecodeError(f"a prune table is not valid msgpack: {exc}") from None
    if type(rows) is not tuple or len(rows) > MAX_TABLE_ENTRIES:
        raise DecodeError(f"a prune table is an array of at most {MAX_TABLE_ENTRIES} rows")
    entries: dict[str, Marker] = {}
    for row in rows:
        if type(row) is not tuple or len(row) != 6:
            raise DecodeError("a prune table row is [id, kind, owner, ...] of 6 items")
        replica_id = read_name(row[0], "a pruned replica id")
        owner = read_name(row[2], "an owner")
        if row[1] == _INIT:
            round_ = read_count(row[3], 1, "a round")
            marker: Marker = Init(owner, round_, _ids(row[4]), _ids(row[5]))
        elif row[1] == _PERFORMED:
            marker = Performed(
                owner, read_name(row[3], "an owner replica"),
                read_count(row[4], 0, "up_to"), read_count(row[5], 0, "top"),
            )  # fmt: skip
        else:
            raise DecodeError(f"unknown prune marker kind {row[1]!r}")
        if replica_id in entries:
            raise DecodeError(f"a prune table names {replica_id!r} twice")
        entries[replica_id] = marker
    return tuple(entries.items())


def read_name(raw: Any, what: str, limit: int = MAX_REPLICA_ID_CHARS) -> str:
    """``raw`` if it is a str of 1 to ``limit`` characters (an id by default), else DecodeError."""
    if type(raw) is not str or not 0 < len(raw) <= limit:
        raise DecodeError(f"{what} must be a str of 1 to {limit} characters")
    return raw


def read_count(raw: Any, low: int, what: str) -> int:
    """``raw`` if it is an int in ``[low, 2**63-1]``, else DecodeError."""
    if type(raw) is not int or not low <= raw <= INT64_MAX:
        raise DecodeError(f"{what} must be an int in [{low}, 2**63-1], not {raw!r}")
    return raw


def _ids(raw: Any) -> frozenset[str]:
    if type(raw) is not tuple or len(raw) > MAX_SEEN:
        raise DecodeError(f"a set of node ids is an array of at most {MAX_SEEN}")
    return frozenset(read_name(node_id, "a node id") for node_id in raw)


__all__ = [
    "Actions",
    "Bloom",
    "Init",
    "Marker",
    "Performed",
    "Pruning",
    "PruningConfig",
    "decode_table",
    "encode_table",
    "join_marker",
]
