"""What a clean restart resumes of the sync engine: its epoch, delta buffer and ack map.

A node that stops cleanly and comes back with the same replica (a
``data_dir``) could start a new epoch, and its peers would repair it by
context, which ends in a full-state snapshot as soon as either side wrote
while it was down. Keeping the session instead resumes the exchange where it
stopped: the same epoch, so each peer's record of this node stays valid; the
buffered deltas some peer has not acknowledged yet, which are sent as usual;
and each peer's ack and merged seq. Peers that wrote meanwhile send only
their deltas since.

Per-epoch counters that peers compare across messages go with it: the
refusals count (a rewind is news only when the count grows) and the last
snapshot transfer id (an older transfer's pieces are stale). Whatever else an
exchange tracks (a reply in flight, a transfer under way, what news was
told) starts afresh, which costs at most a resend.

Sans-IO: ``save`` makes bytes and ``resume`` takes them; the Node keeps them
in its store at a clean stop and resumes them only after one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from agentsync.crdt.codec import MAX_ENCODED_BYTES, decode
from agentsync.crdt.ormap import ORMap
from agentsync.errors import DecodeError
from agentsync.sync.engine import MAX_PEERS, PeerState, Session, SyncEngine
from agentsync.sync.pruning import read_count, read_name

FORMAT = 1
"""The layout ``save`` writes; ``resume`` refuses any other."""


def save(engine: SyncEngine) -> bytes:
    """The engine's session, for ``resume`` after a clean restart (seals pending writes)."""
    kept = engine.session()
    floor = kept.floor
    entries = [[seq, origin, data] for seq, (_, origin, data) in enumerate(kept.entries, floor + 1)]
    peers = [
        [node_id, p.epoch, p.ack, p.merged, p.replica, p.refusals, p.last_transfer]
        for node_id, p in sorted(kept.peers.items())
    ]
    session = [FORMAT, kept.epoch, kept.refusals, kept.last_transfer,
               floor + len(entries), floor, entries, peers]  # fmt: skip
    return msgpack.packb(session, use_bin_type=True)  # type: ignore[no-any-return]


def resume(engine: SyncEngine, data: bytes) -> None:
    """Take the session ``save`` made, into an engine that has not exchanged yet.

    The engine's state must be the one the session was saved with (its
    replica resumed from the same store). Raises DecodeError, and changes
    nothing, if ``data`` is not a session.
    """
    if type(data) is not bytes or len(data) > MAX_ENCODED_BYTES:
        raise DecodeError("a session is bytes within the encoded bound")
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack's errors vary by input; all mean malformed
        raise DecodeError(f"not a session: {exc}") from None
    if type(raw) is not tuple or len(raw) != 8 or raw[0] != FORMAT:
        raise DecodeError("not a session of this format")
    _, epoch, refusals, last_transfer, head, floor, raw_entries, raw_peers = raw
    epoch, refusals, last_transfer = (_count(v) for v in (epoch, refusals, last_transfer))
    head, floor = _count(head), _count(floor)
    if floor > head:
        raise DecodeError("a session's buffer floor is above its head")
    entries = _entries(raw_entries, floor, head)
    engine.resume(Session(epoch, refusals, last_transfer, floor, entries, _peers(raw_peers)))


def _entries(raw: Any, floor: int, head: int) -> tuple[tuple[ORMap, str | None, bytes], ...]:
    """The buffered deltas, which hold every seq after the floor up to the head (no gap:
    ``DeltaBuffer.since`` finds an entry by its distance from the first)."""
    if type(raw) is not tuple or len(raw) != head - floor:
        raise DecodeError("a session's entries are an array of one per seq after its floor")
    entries = []
    for seq, item in enumerate(raw, floor + 1):
        if type(item) is not tuple or len(item) != 3:
            raise DecodeError("a session entry is [seq, origin, delta]")
        if type(item[0]) is not int or item[0] != seq:
            raise DecodeError("a session's entries must run from its floor to its head")
        origin = _optional(item[1], _name)
        data = item[2]
        if type(data) is not bytes:
            raise DecodeError("a session entry's delta is bin")
        delta = decode(data, ORMap)
        if not delta.is_delta:
            raise DecodeError("a session entry is a delta, not a full state")
        entries.append((delta, origin, data))
    return tuple(entries)


def _peers(raw: Any) -> dict[str, PeerState]:
    if type(raw) is not tuple or len(raw) > MAX_PEERS:  # an engine keeps no more
        raise DecodeError(f"a session's peers are an array of at most {MAX_PEERS}")
    peers: dict[str, PeerState] = {}
    for item in raw:
        if type(item) is not tuple or len(item) != 7:
            raise DecodeError("a session peer is 7 items: id, epoch, ack, merged, replica...")
        node_id = _name(item[0])
        if node_id in peers:
            raise DecodeError("a session names a peer twice")
        epoch, ack, merged = (_optional(v, _count) for v in item[1:4])
        replica = _optional(item[4], _name)
        peers[node_id] = PeerState(
            epoch=epoch, ack=ack, merged=merged, replica=replica,
            refusals=_count(item[5]), last_transfer=_count(item[6]),
        )  # fmt: skip
    return peers


def _count(raw: Any) -> int:
    return read_count(raw, 0, "a session count")


def _name(raw: Any) -> str:
    return read_name(raw, "a session id")


def _optional(raw: Any, check: Callable[[Any], Any]) -> Any:
    return None if raw is None else check(raw)
