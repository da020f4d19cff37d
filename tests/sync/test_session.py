"""A clean restart resumes the sync session: same epoch, delta buffer and ack map.

Without it a restarted node starts a new epoch, its peers repair it by
context, and as soon as either side wrote while it was down that ends in a
full-state snapshot. With it, each side sends only its deltas since.
"""

from __future__ import annotations

import msgpack
import pytest

from agentsync.crdt import ORSet
from agentsync.errors import DecodeError
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from agentsync.sync import session as sessions


def wire(message: SyncMessage) -> SyncMessage:
    return decode_message(encode_message(message))


def exchange(a: SyncEngine, b: SyncEngine) -> None:
    request = wire(a.request(b.node_id if b.node_id in a.peers else None))
    a.on_response(wire(b.on_request(request)[0]))


def add(engine: SyncEngine, element: str) -> None:
    engine.record_local(engine.state.update("s", ORSet, lambda s: s.add(element)))


def snapshots(*engines: SyncEngine) -> int:
    return sum(e.metrics.full_state_fallbacks for e in engines)


def acquainted() -> tuple[SyncEngine, SyncEngine]:
    """Two engines that have exchanged until both hold valid acks of each other."""
    a, b = SyncEngine("a", epoch=1), SyncEngine("b", epoch=2)
    for i in range(50):
        add(a, f"a{i}")
        add(b, f"b{i}")
    for _ in range(4):
        exchange(a, b)
        exchange(b, a)
    assert a.state == b.state
    return a, b


def restarted(a: SyncEngine, session: bytes | None) -> SyncEngine:
    """``a`` after a clean restart: its durable state, and its session if kept."""
    again = SyncEngine("a", state=a.state.copy())
    if session is not None:
        sessions.resume(again, session)
    return again


@pytest.mark.parametrize("kept", [True, False], ids=["session kept", "new epoch"])
def test_a_clean_restart_resumes_with_deltas_not_a_snapshot(kept: bool) -> None:
    a, b = acquainted()
    add(a, "written just before the stop")  # b never got it
    a = restarted(a, sessions.save(a) if kept else None)  # its metrics start at 0
    before = snapshots(b)
    add(b, "written while a was down")
    add(a, "written after the restart")
    for _ in range(4):
        exchange(a, b)
        exchange(b, a)
    assert a.state == b.state
    assert len(a.state.value["s"]) == 103
    if kept:
        assert snapshots(a, b) == before, "a resumed session needs no snapshot"
    else:
        assert snapshots(a, b) > before, "without it, both writes force a snapshot"


def test_a_session_round_trips_and_keeps_the_per_epoch_counters() -> None:
    a, _ = acquainted()
    add(a, "pending")
    a._refusals = 3  # a rewind is news to b only when this count grows
    a._last_transfer = 5  # b takes only newer transfers of a's
    saved = sessions.save(a)
    again = restarted(a, saved)
    assert (again.epoch, again._refusals, again._last_transfer) == (1, 3, 5)
    mine, theirs = again.peers["b"], a.peers["b"]
    assert (mine.ack, mine.merged, mine.epoch) == (theirs.ack, theirs.merged, theirs.epoch)
    assert again.head == a.head
    assert sessions.save(again) == saved


def test_a_session_resumed_under_a_smaller_buffer_bound_drops_its_oldest_entries() -> None:
    a, _ = acquainted()
    add(a, "pending")
    again = SyncEngine("a", state=a.state.copy(), buffer_max_bytes=0)
    sessions.resume(again, sessions.save(a))
    assert again.head == a.head
    assert again.delta_buffer_bytes == 0 and again._buffer.evicted == 1


def _session(**changes: object) -> bytes:
    a, _ = acquainted()
    add(a, "pending")
    raw = list(msgpack.unpackb(sessions.save(a), raw=False))
    fields = ["format", "epoch", "refusals", "transfer", "head", "floor", "entries", "peers"]
    for name, value in changes.items():
        raw[fields.index(name)] = value
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def _entry() -> bytes:
    """The encoding of the one buffered delta in ``_session``'s session."""
    return msgpack.unpackb(_session(), raw=False)[6][0][2]  # type: ignore[no-any-return]


BAD = {
    "not msgpack": b"\xc1",
    "not an array": msgpack.packb({"a": 1}),
    "another format": _session(format=2),
    "a negative epoch": _session(epoch=-1),
    "floor above head": _session(floor=10**6),
    "entries not an array": _session(entries=7),
    "an entry out of order": _session(entries=[[10**6, None, b"x"]]),
    "an entry that is no delta": _session(head=2, floor=1, entries=[[2, None, b"\x00"]]),
    "a gap between entries": _session(
        head=4, floor=0, entries=[[1, None, _entry()], [3, None, _entry()], [4, None, _entry()]]
    ),
    "entries short of the head": _session(head=3, floor=0, entries=[[1, None, _entry()]]),
    "no entries below the head": _session(head=3, floor=2, entries=[]),
    "a peer named twice": _session(peers=[["p", 1, 1, 1, None, 0, 0]] * 2),
    "a peer with a bad ack": _session(peers=[["p", 1, "x", 1, None, 0, 0]]),
    "a peer id too long": _session(peers=[["p" * 300, 1, 1, 1, None, 0, 0]]),
}


@pytest.mark.parametrize("data", list(BAD.values()), ids=list(BAD))
def test_a_bad_session_raises_decode_error_and_changes_nothing(data: bytes) -> None:
    engine = SyncEngine("a", epoch=7)
    add(engine, "x")
    before = (engine.epoch, engine.head, dict(engine.peers))
    with pytest.raises(DecodeError):
        sessions.resume(engine, data)
    assert (engine.epoch, engine.head, dict(engine.peers)) == before
