"""A burst of writes that cancel out still gets through (found by the bounded-metadata test).

Every write adds a dot to the context of its delta group, so 20,000
add/remove cycles of one element between two exchanges make a delta of a
few dozen bytes that lists 40,000 dots. A receiver's decode refuses a cloud
that large from so few bytes (``codec.cloud_budget``), so such a delta was
refused at every exchange, for ever: the replicas never converged. Now the
buffer seals a local group once it lists ``MAX_LISTED_DOTS`` dots, and the
engine checks that every delta it composes (a join, a cut, a merged part)
is decodable, sending what it was made of when not.

The first fix bounded every composed delta by ``MAX_LISTED_DOTS`` listed
dots, whatever its size. Under a storm of honest writes that made relays
forward what arrived instead of the part new to them (no RR), and the
peers of a 5-node mesh took 3-6x as long to catch up: the last test here
keeps that from coming back.
"""

from __future__ import annotations

import itertools

from agentsync.crdt import ORMap, ORSet, decode
from agentsync.crdt.codec import MIN_CLOUD_DOTS
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from agentsync.sync.buffer import MAX_LISTED_DOTS

CYCLES = 20_000


def wire(message: SyncMessage) -> SyncMessage:
    """``message`` after its trip through bytes, whose decode refuses a cloud too large for them."""
    return decode_message(encode_message(message))


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


def test_a_relay_forwards_only_the_new_part_of_a_storm_of_honest_writes() -> None:
    """A storm's part lists many dots, backed by as many entries: it is decodable, so RR holds."""
    a, b, c = (SyncEngine(i, epoch=n) for n, i in enumerate("abc", 1))
    a.record_local(a.state.update("s", ORSet, lambda s: s.add("kept")))
    settle(a, b, c)  # every dot of a above 1: the storm's are listed
    for _ in range(3):  # until a holds an ack of b's (settle stops once the states agree)
        exchange(a, b)
    state = a.state
    for i in range(3 * MAX_LISTED_DOTS):  # several sealed entries, each under the bound
        a.record_local(state.update("s", ORSet, lambda s, i=i: s.add(i)))
    request = wire(a.request("b"))
    assert len(request.deltas) > 1, "the storm should arrive as several entries"
    before = len(b._buffer)
    b.on_request(request)
    (entry,) = b._buffer.since(b._buffer.head - 1)
    assert len(b._buffer) == before + 1, "the relay buffered what arrived, not the new part"
    assert len(entry.delta.context.cloud) == 3 * MAX_LISTED_DOTS > MAX_LISTED_DOTS
    assert decode(entry.data, ORMap) == entry.delta, "a relay buffered a delta decode refuses"
    settle(a, b, c)
    assert len(c.state.value["s"]) == 3 * MAX_LISTED_DOTS + 1
