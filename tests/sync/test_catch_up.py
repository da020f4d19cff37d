"""``SyncEngine.catch_up``: how far a snapshot transfer has come, on both sides."""

from __future__ import annotations

import hashlib

from agentsync.crdt import ORMap, ORSet
from agentsync.sync import SyncEngine


def test_a_large_catch_up_goes_in_bounded_pieces_and_reports_its_progress() -> None:
    state = ORMap("a")
    for i in range(3000):
        item = hashlib.sha256(str(i).encode()).hexdigest()  # compresses little
        state.update("tasks", ORSet, lambda s, item=item: s.add(item))
    a = SyncEngine("a", state=state, max_message_bytes=16384)
    b = SyncEngine("b", max_message_bytes=16384)
    seen: list[dict[str, tuple[int, int]]] = []
    for _ in range(100):
        request = b.request("a" if "a" in b.peers else None)
        reply, _ = a.on_request(request)
        b.on_response(reply)
        seen.append(b.catch_up("a"))
        assert len(reply.piece.data if reply.piece else b"") <= 16384
        if b.state == a.state:
            break
    assert b.state == a.state
    receiving = [progress["receiving"] for progress in seen if "receiving" in progress]
    assert len(receiving) >= 3, seen  # several pieces, each reported
    assert [done for done, _ in receiving] == sorted(done for done, _ in receiving)
    assert all(total == receiving[0][1] > done for done, total in receiving)
    assert a.catch_up("b")["sending"][1] == receiving[0][1]  # a learns it is over from b's ack
    reply, _ = a.on_request(b.request("a"))
    b.on_response(reply)
    assert b.catch_up("a") == {} and a.catch_up("b") == {}  # over on both sides
    assert a.catch_up("nobody") == {}


def test_a_state_that_arrives_whole_reports_the_names_it_emptied() -> None:
    """A whole state names none of the keys it removed: the names it empties or thins
    here must still be reported changed (a Node's subscribers and ``watch()`` hear it)."""
    a, b = SyncEngine("a"), SyncEngine("b")
    for name in ("kept", "emptied", "thinned"):
        a.record_local(a.state.update(name, ORSet, lambda s, name=name: s.add(f"{name} 1")))
    a.record_local(a.state.update("thinned", ORSet, lambda s: s.add("thinned 2")))
    reply, _ = a.on_request(b.request(None))
    b.on_response(reply)
    assert b.state.value == a.state.value
    b.record_local(b.state.remove("emptied"))
    b.record_local(b.state.update("thinned", ORSet, lambda s: s.remove("thinned 1")))
    again = SyncEngine("a", state=a.state.copy())  # restarted, no session: b's state comes whole
    changed: set[str] = set()
    for _ in range(20):
        reply, _ = b.on_request(again.request("b" if "b" in again.peers else None))
        changed |= again.on_response(reply)
        if again.state.value == b.state.value:
            break
    assert again.state.value == {"kept": {"kept 1"}, "thinned": {"thinned 2"}}
    assert b.metrics.full_state_fallbacks >= 1  # it did come whole
    assert changed >= {"emptied", "thinned"}
