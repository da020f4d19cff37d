"""A burst of writes that cancel out still gets through (found by the bounded-metadata test).

Every write adds a dot to the context of its delta group, so 20,000
add/remove cycles of one element between two exchanges make a delta of a
few dozen bytes that lists 40,000 dots. A receiver's decode refuses a cloud
that large from so few bytes (``codec.cloud_budget``), so such a delta was
refused at every exchange, for ever: the replicas never converged. The
engine now composes no delta that lists more than ``MAX_LISTED_DOTS`` dots:
the buffer seals, intervals join, and merged parts are forwarded, within it.
"""

from __future__ import annotations

import itertools

from agentsync.crdt import ORSet
from agentsync.crdt.codec import MIN_CLOUD_DOTS
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from agentsync.sync.buffer import MAX_LISTED_DOTS

CYCLES = 20_000


def wire(message: SyncMessage) -> SyncMessage:
    """``message`` after its trip through bytes; every delta in it lists few enough dots."""
    back = decode_message(encode_message(message))
    for delta in back.deltas:
        assert len(delta.context.cloud) <= MIN_CLOUD_DOTS
    return back


def exchange(a: SyncEngine, b: SyncEngine) -> None:
    request = wire(a.request(b.node_id if b.node_id in a.peers else None))
    a.on_response(wire(b.on_request(request)[0]))


def settle(*line: SyncEngine, rounds: int = 10) -> None:
    """Exchange along the line, both ways, until every state is equal."""
    for _ in range(rounds):
        for a, b in itertools.pairwise(line):
            exchange(a, b)
            exchange(b, a)
        if all(e.state == line[0].state for e in line):
            return
    states = [e.state.value for e in line]
    raise AssertionError(f"{rounds} loss-free rounds along the line left {states}")


def churn(engine: SyncEngine, cycles: int = CYCLES) -> None:
    """Add and remove one element ``cycles`` times, each write recorded on its own."""
    state = engine.state
    for _ in range(cycles):
        engine.record_local(state.update("s", ORSet, lambda s: s.add("x")))
        engine.record_local(state.update("s", ORSet, lambda s: s.remove("x")))


def test_a_burst_of_cancelling_writes_reaches_a_peer_and_its_peer() -> None:
    a, b, c = (SyncEngine(i, epoch=n) for n, i in enumerate("abc", 1))
    a.record_local(a.state.update("s", ORSet, lambda s: s.add("kept")))
    settle(a, b, c)  # every pair tracked, and every dot of a above 1: the burst's are listed
    snapshots = sum(e.metrics.full_state_fallbacks for e in (a, b, c))
    churn(a)
    assert CYCLES * 2 > 2 * MIN_CLOUD_DOTS > MAX_LISTED_DOTS
    settle(a, b, c)
    assert c.state.value == {"s": frozenset({"kept"})}
    assert sum(e.metrics.full_state_fallbacks for e in (a, b, c)) == snapshots, "deltas sufficed"
    assert c.state.context.version_vector == {"a": 1 + 2 * CYCLES}


def test_a_snapshot_of_a_churned_replica_is_forwarded_decodably() -> None:
    """b falls behind a's small buffer, so a sends b a snapshot; c gets it from b.

    (This one passed before too: the part of a snapshot that removed dots
    never seen here is the whole snapshot, whose context is compact.)
    """
    a = SyncEngine("a", epoch=1, buffer_max_bytes=64)
    b, c = SyncEngine("b", epoch=2), SyncEngine("c", epoch=3)
    a.record_local(a.state.update("s", ORSet, lambda s: s.add("kept")))
    settle(a, b, c)
    snapshots = a.metrics.full_state_fallbacks
    churn(a)
    settle(a, b, c)
    assert a.metrics.full_state_fallbacks > snapshots, "the buffer bound did not force a snapshot"
    assert c.state.value == {"s": frozenset({"kept"})}
    assert c.state == a.state
