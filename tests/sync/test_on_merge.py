"""``SyncEngine.on_merge``: every part of a peer's state merged here, and only that."""

from __future__ import annotations

from agentsync.crdt import ORMap, ORSet
from agentsync.sync import SyncEngine


def exchange(a: SyncEngine, b: SyncEngine) -> None:
    reply, _ = b.on_request(a.request(b.node_id if b.node_id in a.peers else None))
    a.on_response(reply)


def test_on_merge_sees_each_merged_part_and_replaying_them_rebuilds_the_state() -> None:
    a, b = SyncEngine("a"), SyncEngine("b")
    logged: list[ORMap] = []
    b.on_merge = lambda part: logged.append(part.copy())
    for i in range(3):
        a.record_local(a.state.update("tasks", ORSet, lambda s, i=i: s.add(f"t{i}")))
        exchange(a, b)
    merged = len(logged)
    exchange(a, b)  # nothing new: nothing merged
    assert len(logged) == merged > 0
    rebuilt = ORMap("b")
    for part in logged:
        rebuilt.merge(part)
    assert rebuilt == b.state
