"""How an interval travels: one joined delta, and a response cut by its request."""

from __future__ import annotations

import copy
import random
from dataclasses import replace

from agentsync.crdt import ORMap, ORSet, decode
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from tests.sync.simnet import SimNet, adding

SEED = 17


def wire(message: SyncMessage) -> SyncMessage:
    return decode_message(encode_message(message))


def exchange(a: SyncEngine, b: SyncEngine) -> tuple[SyncMessage, SyncMessage]:
    """A loss-free exchange a -> b; returns the request and the response as received."""
    request = wire(a.request(b.node_id if b.node_id in a.peers else None))
    response = wire(b.on_request(request)[0])
    a.on_response(response)
    return request, response


def acquainted(*engines: SyncEngine) -> None:
    """Every pair exchanges until each holds an ack of the other."""
    for _ in range(2):
        for a in engines:
            for b in engines:
                if a is not b:
                    exchange(a, b)


def write(engine: SyncEngine, element: str) -> None:
    engine.record_local(engine.state.update("s", ORSet, adding(element)))


# -- one joined delta -----------------------------------------------------------------------


def test_an_interval_of_several_entries_travels_as_one_joined_delta() -> None:
    a, b, c = (SyncEngine(name, epoch=i + 1) for i, name in enumerate("abc"))
    acquainted(a, b, c)
    for i in range(5):  # each exchange with c seals a's writes so far into an entry
        write(a, f"x{i}")
        exchange(a, c)
    entries = a._buffer.since(a.peers["b"].ack or 0)
    assert len(entries) == 5
    before = [(entry.data, entry.delta.copy()) for entry in entries]
    request = a.request("b")
    assert len(request.deltas) == 1, "five entries sent as five framed deltas"
    assert request.deltas[0].value == {"s": frozenset(f"x{i}" for i in range(5))}
    for entry, (data, delta) in zip(entries, before, strict=True):
        assert entry.data == data and entry.delta == delta, "the join changed a buffered entry"
        assert decode(entry.data, ORMap) == delta
    b.on_request(wire(request))
    assert b.state == a.state


def test_a_single_entry_is_sent_as_encoded_once() -> None:
    a, b = SyncEngine("a", epoch=1), SyncEngine("b", epoch=2)
    acquainted(a, b)
    write(a, "x")
    request = a.request("b")
    (entry,) = a._buffer.since(a.peers["b"].ack or 0)
    assert request.encoded_deltas is not None and request.encoded_deltas[0] is entry.data
    assert request.deltas[0] is entry.delta


# -- the response cut -----------------------------------------------------------------------


def triangle() -> tuple[SyncEngine, SyncEngine, SyncEngine]:
    """c writes x and hands it to a and b, who both hold it now (from c)."""
    a, b, c = (SyncEngine(name, epoch=i + 1) for i, name in enumerate("abc"))
    acquainted(a, b, c)
    write(c, "x")
    exchange(c, a)
    exchange(c, b)
    return a, b, c


def test_a_response_leaves_out_what_its_request_carried() -> None:
    a, b, c = triangle()
    uncut = copy.deepcopy(b).request("a")  # what b would send a (a request is never cut)
    assert [d.value for d in uncut.deltas] == [{"s": frozenset({"x"})}]
    request, response = exchange(a, b)
    assert [d.value for d in request.deltas] == [{"s": frozenset({"x"})}]
    assert response.deltas == (), "b sent x back to a, which had just sent it"
    assert response.seq >= uncut.seq  # the cut part is covered all the same
    assert b.request("a").deltas == (), "b sends x to a later instead"
    for _ in range(2):
        for x, y in ((a, b), (b, c), (c, a), (b, a)):
            exchange(x, y)
    assert a.state == b.state == c.state
    assert not any(e.delta_buffer_bytes for e in (a, b, c))


def test_a_response_keeps_what_its_request_did_not_carry() -> None:
    a, b, _ = triangle()
    write(b, "only-b")
    _, response = exchange(a, b)
    assert [d.value for d in response.deltas] == [{"s": frozenset({"only-b"})}]
    assert a.state.value["s"] == frozenset({"x", "only-b"})


def test_a_late_response_to_an_earlier_incarnation_is_not_merged() -> None:
    """It was cut by what the old incarnation held, which the new one may lack."""
    a, b, _ = triangle()
    late = wire(b.on_request(wire(a.request("b")))[0])
    restarted = SyncEngine("a", epoch=99)
    exchange(restarted, b)  # b meets the new incarnation
    assert late.ack is not None and late.ack[0] == a.epoch
    before = restarted.state.copy()
    merged = restarted.peers["b"].merged
    assert restarted.on_response(late) == frozenset()
    assert restarted.state == before and restarted.peers["b"].merged == merged


def test_on_a_mesh_the_cut_never_drops_what_the_requester_lacks() -> None:
    """Each response against the same responder answering uncut (a request carrying nothing).

    Five nodes, every pair a neighbour, random writes and exchanges without
    loss: after merging the cut response, the requester holds every delta
    the uncut one would have carried, and in all the cut responses carry
    strictly fewer bytes.
    """
    rng = random.Random(SEED)
    net = SimNet(SEED, 5, topology="random", fanout=4)
    net.run(3)
    net.settle()
    cut_bytes = uncut_bytes = cut_responses = 0
    for _ in range(300):
        for node_id in net.ids:
            if rng.random() < 0.4:
                net.random_write(node_id)
        a, b = rng.sample(net.ids, 2)
        ea, eb = net.engines[a], net.engines[b]
        request = wire(ea.request(b))
        probe = copy.deepcopy(eb)
        uncut = wire(probe.on_request(replace(request, deltas=(), encoded_deltas=None))[0])
        response = wire(eb.on_request(request)[0])
        ea.on_response(response)
        for delta in uncut.deltas:
            assert ea.state.unseen_part(delta) is None, f"seed={SEED}: {a} lacks {delta!r}"
        sizes = (len(encode_message(response)), len(encode_message(uncut)))
        cut_bytes += sizes[0]
        uncut_bytes += sizes[1]
        cut_responses += sizes[0] < sizes[1]
    net.settle()
    net.check_writes()
    assert cut_responses and cut_bytes < uncut_bytes, (cut_bytes, uncut_bytes)


# -- what a message repeats -----------------------------------------------------------------


def test_the_replica_id_travels_until_the_peer_acks_this_epoch() -> None:
    a, b = SyncEngine("a", epoch=1), SyncEngine("b", epoch=2)
    first, _ = exchange(a, b)
    assert first.replica == a.state.replica_id
    acquainted(a, b)
    request, response = exchange(a, b)
    assert request.replica is None and response.replica is None, "an idle exchange repeats it"
    assert b.peers["a"].replica == a.state.replica_id, "b forgot a's replica id"
    restarted = SyncEngine("b", epoch=3, state=b.state)  # b restarts with its data
    request = wire(a.request("b"))
    restarted.on_request(request)
    assert a.request("b").replica is None  # a has not heard of b's new epoch yet
    exchange(restarted, a)  # a notices the new epoch: its record of b starts over
    assert a.request("b").replica == a.state.replica_id
    exchange(a, restarted)
    assert restarted.peers["a"].replica == a.state.replica_id
