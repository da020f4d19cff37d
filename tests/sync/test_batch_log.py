"""``SyncEngine.log_writes``/``logged``: a durable batch's writes, recorded by the delta buffer.

Whatever happens to the buffer meanwhile (an exchange seals the pending
writes and sends them, the last peer is dropped and the buffer cleared, a
seal every ``SEAL_EVERY`` writes), the blobs ``logged`` returns join to
every write made since ``log_writes``.
"""

from __future__ import annotations

from agentsync.crdt import ORMap, ORSet, PNCounter
from agentsync.crdt.codec import decode
from agentsync.sync import SyncEngine
from agentsync.sync.buffer import SEAL_EVERY


def exchange(a: SyncEngine, b: SyncEngine) -> None:
    reply, _ = b.on_request(a.request(b.node_id if b.node_id in a.peers else None))
    a.on_response(reply)


def add(engine: SyncEngine, element: str) -> None:
    engine.record_local(engine.state.update("s", ORSet, lambda s: s.add(element)))


def replayed(before: ORMap, blobs: list[bytes]) -> ORMap:
    state = before.copy()
    for blob in blobs:
        state.merge(decode(blob))
    return state


def test_no_peer_the_log_joins_to_the_writes_and_nothing_stays_buffered() -> None:
    a = SyncEngine("a")
    add(a, "before")
    before = a.state.copy()
    a.log_writes()
    for i in range(SEAL_EVERY + 3):  # crosses a seal
        add(a, f"x{i}")
    a.record_local(a.state.update("n", PNCounter, lambda c: c.increment(2)))
    blobs = a.logged()
    assert len(blobs) == 2
    assert replayed(before, blobs) == a.state
    assert a.delta_buffer_bytes == 0  # no peer needs them
    assert a.logged() == []  # not logging any more
    add(a, "after")
    assert a.logged() == []


def test_with_a_peer_writes_sent_or_cleared_mid_batch_are_still_logged() -> None:
    a, b = SyncEngine("a"), SyncEngine("b")
    add(a, "first")
    exchange(a, b)  # b is tracked now
    before = a.state.copy()
    a.log_writes()
    add(a, "sent")
    exchange(a, b)  # seals the pending write into an entry, sent before the batch ends
    add(a, "cleared")
    a._buffer.clear()  # as when no peer is tracked any more
    add(a, "last")
    blobs = a.logged()
    assert replayed(before, blobs) == a.state
    for _ in range(3):  # the buffer cleared under b's ack: b catches up all the same
        exchange(a, b)
    assert b.state.get("s").value == {"first", "sent", "cleared", "last"}
