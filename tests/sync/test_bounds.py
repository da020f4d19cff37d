"""Idle cost, the delta buffer's byte bound, and large states cut into pieces."""

from __future__ import annotations

import msgpack
import pytest

from agentsync.crdt import GCounter, ORMap, ORSet
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from tests.sync.simnet import Faults, SimNet, Topology, adding

BOUND = 16384


def wire(message: SyncMessage, bound: int = BOUND) -> SyncMessage:
    data = encode_message(message)
    assert len(data) <= bound, f"a message of {len(data)} bytes, over {bound}"
    return decode_message(data)


def fill(engine: SyncEngine, n: int, prefix: str = "x") -> None:
    """``n`` local adds to the ORSet ``big``."""
    for k in range(n):
        delta = engine.state.update("big", ORSet, adding(f"{prefix}{k:05d}"))
        engine.record_local(delta)


# -- idle cost ------------------------------------------------------------------------------


def test_an_exchange_between_peers_in_sync_costs_under_100_bytes_each_way() -> None:
    seed = 5
    net = SimNet(seed, 16, topology="random", fanout=3, faults=Faults(loss=0.1, reorder=True))
    net.run(12)
    net.settle(max_rounds=40)
    pairs = [(a, b) for a in net.ids for b in net.ids if a != b]
    for a, b in pairs:  # every pair has met, so every exchange below is between known peers
        net.exchange(a, b)
    sizes = {(a, b): net.exchange(a, b) for a, b in pairs}
    worst = max(max(size) for size in sizes.values())
    assert worst < 100, f"seed={seed}: idle exchange of {worst} bytes: {sizes}"
    both = max(sum(size) for size in sizes.values())
    assert both < 100, f"seed={seed}: idle request and response of {both} bytes: {sizes}"
    assert net.converged(), f"seed={seed}: idle exchanges changed something"
    buffered = {i: e.delta_buffer_bytes for i, e in net.engines.items()}
    assert not any(buffered.values()), f"seed={seed}: acked deltas still buffered: {buffered}"


# -- the delta buffer's bound ---------------------------------------------------------------


def run_behind(seed: int, buffer_max_bytes: int) -> SimNet:
    """n02 is cut off while n00 and n01 write and sync; then it comes back."""
    net = SimNet(seed, 3, buffer_max_bytes=buffer_max_bytes)
    net.run(5)
    net.settle()
    a, b, c = net.ids
    net.partition([a, b], [c])
    for _ in range(60):
        net.random_write(a)
        net.random_write(b)
        net.exchange(a, b)
        for engine in net.engines.values():
            assert engine.delta_buffer_bytes <= buffer_max_bytes, net.where()
    net.heal()
    net.settle(max_rounds=20)
    net.check_writes()
    return net


def test_a_peer_behind_the_buffer_bound_is_repaired_by_a_snapshot() -> None:
    seed = 21
    control = run_behind(seed, 8 << 20)
    bounded = run_behind(seed, 1024)
    spent = sum(e.metrics.full_state_fallbacks for e in control.engines.values())
    fallbacks = sum(e.metrics.full_state_fallbacks for e in bounded.engines.values())
    assert fallbacks > spent, f"seed={seed}: {fallbacks} snapshots with a 1 KiB buffer, {spent}"


# -- large states -------------------------------------------------------------------------


@pytest.mark.parametrize("initiator", ["new", "big"])
def test_a_large_state_arrives_in_pieces_each_within_the_bound(initiator: str) -> None:
    big = SyncEngine("big", max_message_bytes=BOUND, epoch=1)
    new = SyncEngine("new", max_message_bytes=BOUND, epoch=2)
    fill(big, 20_000)
    new.record_local(new.state.update("mine", ORSet, lambda s: s.add("only-here")))
    pieces = []
    for _ in range(100):
        if big.state == new.state and not big.wants_more("new") and not new.wants_more("big"):
            break
        a, b = (new, big) if initiator == "new" else (big, new)
        request = wire(a.request(b.node_id if b.node_id in a.peers else None))
        response, _ = b.on_request(request)
        response = wire(response)
        a.on_response(response)
        pieces += [m.piece for m in (request, response) if m.piece is not None]
    assert big.state == new.state
    assert len(new.state.value["big"]) == 20_000 and "only-here" in big.state.value["mine"]
    assert len(pieces) >= 3 and len({p.transfer for p in pieces}) == 1, pieces
    assert big.metrics.full_state_fallbacks == 1
    assert not big.wants_more("new") and not new.wants_more("big")


def test_a_new_peer_of_a_busy_writer_needs_one_snapshot() -> None:
    """Regression: writes during the snapshot used to expire it (two snapshots, not one)."""
    writer = SyncEngine("writer", max_message_bytes=BOUND, epoch=1)
    new = SyncEngine("new", max_message_bytes=BOUND, epoch=2)
    fill(writer, 20_000)
    for i in range(30):  # one write between exchanges, as a live agent does
        writer.record_local(writer.state.update("big", ORSet, adding(f"live{i}")))
        request = wire(new.request("writer" if "writer" in new.peers else None))
        new.on_response(wire(writer.on_request(request)[0]))
    assert writer.state == new.state
    assert writer.metrics.full_state_fallbacks == 1


# -- snapshots under duplication and reordering ---------------------------------------------


def big_state_under_faults(seed: int, topology: Topology) -> SimNet:
    """n00 holds 8000 elements (several pieces) when three nodes start gossiping lossily."""
    net = SimNet(seed, 3, topology=topology, faults=Faults(loss=0.1, dup=0.3, reorder=True))
    net.faults.max_delay = 3
    fill(net.engines["n00"], 8000)
    net.run(15, write_prob=0.3)
    return net


@pytest.mark.parametrize(
    ("seed", "topology"), [(1, "random"), (3, "random"), (14, "line"), (14, "star")]
)
def test_a_large_state_converges_under_duplication_and_reordering(
    seed: int, topology: Topology
) -> None:
    """Regression: seeds 14 (line, star) used to diverge for good."""
    net = big_state_under_faults(seed, topology)
    net.settle(max_rounds=60, quiet=False)
    net.check_writes()


@pytest.mark.parametrize(
    ("seed", "topology"),
    [
        (0, "star"),
        (7, "star"),
        (1, "random"),
        (2, "random"),
        (1, "line"),
        (5, "star"),
    ],
)
def test_no_snapshot_stays_under_way_once_converged(seed: int, topology: Topology) -> None:
    net = big_state_under_faults(seed, topology)
    net.settle(max_rounds=60, quiet=False)
    net.settle(max_rounds=60)  # wants_more is False everywhere (or this fails)


def test_a_late_piece_of_a_transfer_the_sender_dropped_is_forgotten() -> None:
    a = SyncEngine("a", max_message_bytes=BOUND, epoch=1)
    b = SyncEngine("b", max_message_bytes=BOUND, epoch=2)
    c = SyncEngine("c", max_message_bytes=BOUND, epoch=3)
    fill(a, 20_000)
    settle(c, a)
    late = a.on_request(wire(b.request(None)))[0]  # a starts a snapshot for b; lost for now
    assert late.piece is not None and late.piece.count > 1
    settle(b, c)  # b gets everything from c instead...
    settle(b, a)  # ...so a drops its outgoing snapshot (b's ack covers it)
    assert a.state == b.state and not a.wants_more("b") and not b.wants_more("a")
    b.on_response(wire(late))  # the lost response turns up
    settle(b, a)
    assert not b.wants_more("a"), "b waits for the rest of a transfer a dropped"


def settle(a: SyncEngine, b: SyncEngine, rounds: int = 40) -> None:
    """Exchange a -> b until both are equal and neither waits for a snapshot piece."""
    for _ in range(rounds):
        request = wire(a.request(b.node_id if b.node_id in a.peers else None))
        a.on_response(wire(b.on_request(request)[0]))
        if a.state == b.state and not a.wants_more(b.node_id) and not b.wants_more(a.node_id):
            return


def test_a_stale_piece_of_an_older_transfer_does_not_stall_the_snapshot() -> None:
    """Regression: a late piece 0 of transfer 1 used to replace transfer 2 for good."""
    a = SyncEngine("a", max_message_bytes=BOUND, epoch=1)
    b = SyncEngine("b", max_message_bytes=BOUND, epoch=2)
    fill(a, 20_000)
    want_snapshot = wire(b.on_request(wire(a.request(None)))[0])  # b: want a snapshot
    a.on_response(want_snapshot)
    first = wire(a.request("b"))  # transfer 1, piece 0
    a.on_response(wire(b.on_request(first)[0]))
    a.on_response(wire(b.on_request(wire(a.request("b")))[0]))  # transfer 1, piece 1
    a.on_response(want_snapshot)  # a late duplicate: may restart as transfer 2
    for _ in range(2):
        a.on_response(wire(b.on_request(wire(a.request("b")))[0]))
    b.on_request(first)  # a late duplicate of transfer 1's piece 0; its response is lost
    for i in range(200):
        if a.state == b.state:
            break
        if i % 2:
            a.on_response(wire(b.on_request(wire(a.request("b")))[0]))
        else:
            b.on_response(wire(a.on_request(wire(b.request("a")))[0]))
    assert a.state == b.state, "200 loss-free exchanges did not finish the snapshot"


def test_a_stale_piece_after_the_snapshot_finished_is_forgotten() -> None:
    """Regression: a late duplicate of piece 0 used to leave wants_more True for good."""
    a = SyncEngine("a", max_message_bytes=BOUND, epoch=1)
    b = SyncEngine("b", max_message_bytes=BOUND, epoch=2)
    fill(a, 20_000)
    first = wire(a.on_request(wire(b.request(None)))[0])  # transfer 1, piece 0
    b.on_response(first)
    for _ in range(20):
        b.on_response(wire(a.on_request(wire(b.request("a")))[0]))
    assert a.state == b.state and not b.wants_more("a")
    b.on_response(first)  # a late duplicate
    for _ in range(20):  # the Node exchanges again at once while wants_more is True
        b.on_response(wire(a.on_request(wire(b.request("a")))[0]))
    assert not b.wants_more("a"), "b waits forever for the rest of a finished transfer"


def test_a_context_message_stays_within_the_bound() -> None:
    """Regression: 700 replica ids made a 22 KB context message under a 16 KiB bound."""
    state = ORMap("hub.0")
    for i in range(700):
        writer = ORMap(f"agent-{i:04d}.{i:016x}")
        state.merge(writer.update("hits", GCounter, lambda c: c.increment()))
    hub = SyncEngine("hub", state=state, max_message_bytes=BOUND, epoch=1)
    for message in (hub.request("newcomer"), hub.request(None)):
        size = len(encode_message(message))
        assert size <= BOUND, f"a context message of {size} bytes"
    newcomer = SyncEngine("newcomer", max_message_bytes=BOUND, epoch=2)
    settle(hub, newcomer)  # and the newcomer is caught up all the same (by a snapshot)
    assert hub.state == newcomer.state and not newcomer.wants_more("hub")


@pytest.mark.parametrize("replicas", [33, 200])
def test_a_context_naming_many_replicas_decodes_and_repairs(replicas: int) -> None:
    """Regression: the message decoder capped every array at 64 items, so a context
    naming over 32 replicas (a vector of two items each) was refused as malformed and
    context repair failed, in any cluster whose nodes had taken over 32 replica ids."""
    state = ORMap("hub.0")
    for i in range(replicas):
        writer = ORMap(f"agent-{i:04d}")
        state.merge(writer.update("hits", GCounter, lambda c: c.increment()))
    hub = SyncEngine("hub", state=state, epoch=1)
    newcomer = SyncEngine("newcomer", state=state.copy(), epoch=2)
    request = wire(hub.request(None), bound=1 << 20)
    assert request.context is not None and len(request.context.version_vector) == replicas
    reply = wire(newcomer.on_request(request)[0], bound=1 << 20)
    assert reply.want is None, "the newcomer holds every dot: it acks, it needs no snapshot"
    hub.on_response(reply)
    assert hub.peers["newcomer"].ack is not None


def test_a_forgotten_peer_releases_the_buffer_and_is_repaired_when_it_returns() -> None:
    seed = 31
    net = SimNet(seed, 3)
    net.run(5)
    net.settle()
    a, b, c = net.ids
    net.partition([a, b], [c])
    for _ in range(10):
        net.random_write(a)
        net.exchange(a, b)
    held = net.engines[a].delta_buffer_bytes
    assert held, f"seed={seed}: nothing buffered for the absent peer"
    net.engines[a].forget(c)
    net.engines[b].forget(c)
    assert net.engines[a].delta_buffer_bytes < held, f"seed={seed}: forget kept the buffer"
    net.heal()
    net.settle(max_rounds=20)
    net.check_writes()


# -- what reordering costs ------------------------------------------------------------------


def both_ways(a: SyncEngine, b: SyncEngine) -> None:
    """One exchange started by each side, with no loss."""
    settle(a, b, rounds=1)
    settle(b, a, rounds=1)


def test_a_late_duplicate_request_costs_no_snapshot() -> None:
    a = SyncEngine("a", epoch=1)
    b = SyncEngine("b", epoch=2)

    for _ in range(3):
        both_ways(a, b)
    a.record_local(a.state.update("s", ORSet, adding("x")))
    both_ways(a, b)
    stale = encode_message(b.request("a"))  # b's ack of a as it is now
    a.record_local(a.state.update("s", ORSet, adding("y")))
    both_ways(a, b)
    both_ways(a, b)  # b holds y, and a knows it and released y from its buffer
    a.record_local(a.state.update("s", ORSet, adding("z")))
    a.on_request(decode_message(stale))  # the stale request turns up late
    for _ in range(5):
        both_ways(a, b)
    assert a.state == b.state
    assert a.metrics.full_state_fallbacks == 0, "a sent b its whole state to deliver z"


@pytest.mark.parametrize(
    "faults",
    [
        Faults(loss=0.2),
        Faults(reorder=True, max_delay=3),
        Faults(dup=0.3, reorder=True, max_delay=3),
    ],
    ids=["loss", "reorder", "dup+reorder"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_once_every_pair_has_met_faults_cost_few_snapshots(seed: int, faults: Faults) -> None:
    """No partition, no restart, no bound hit: the buffer can always repair by deltas.

    (Regression: when a lower ack was always believed, reordering alone cost 38-70.)
    """
    net = SimNet(seed, 5, topology="random", fanout=2, faults=faults)
    net.run(10)
    warm = sum(e.metrics.full_state_fallbacks for e in net.engines.values())
    net.run(60)
    spent = sum(e.metrics.full_state_fallbacks for e in net.engines.values()) - warm
    assert spent <= 5, f"{net.where()}: {spent} snapshots in 60 ticks without a partition"


@pytest.mark.parametrize("first_copy", ["delivered", "held back"])
def test_a_late_duplicate_of_a_rewind_costs_no_snapshot(first_copy: str) -> None:
    """Regression: a duplicated rewind lowered the ack below the floor (then a snapshot).

    With the first copy held back too, the late one is the only one, and
    b's later messages supersede it.
    """
    a = SyncEngine("a", epoch=1)
    b = SyncEngine("b", epoch=2)

    for _ in range(3):
        both_ways(a, b)
    a.record_local(a.state.update("s", ORSet, adding("x")))
    held = encode_message(a.on_request(wire(b.request("a")))[0])  # carries x; held back
    a.record_local(a.state.update("s", ORSet, adding("y")))
    refused, _ = b.on_request(wire(a.request("b")))  # its base is past what b holds
    assert refused.rewind
    rewind = encode_message(refused)
    if first_copy == "delivered":
        a.on_response(decode_message(rewind))
    b.on_response(decode_message(held))  # the held response turns up
    for _ in range(3):
        both_ways(a, b)
    assert a.state == b.state and a.metrics.full_state_fallbacks == 0
    a.record_local(a.state.update("s", ORSet, adding("z")))
    a.on_response(decode_message(rewind))  # a duplicate of the rewind, late
    for _ in range(5):
        both_ways(a, b)
    assert a.state == b.state
    assert a.metrics.full_state_fallbacks == 0, "a sent b its whole state to deliver z"


@pytest.mark.parametrize("seed", [2, 3])
def test_duplication_and_reordering_cost_few_snapshots(seed: int) -> None:
    """As above, on seeds where duplicated rewinds cost 7-8 snapshots (the regression)."""
    net = SimNet(seed, 5, topology="random", fanout=2, faults=Faults(dup=0.3, reorder=True))
    net.faults.max_delay = 3
    net.run(10)
    warm = sum(e.metrics.full_state_fallbacks for e in net.engines.values())
    net.run(60)
    spent = sum(e.metrics.full_state_fallbacks for e in net.engines.values()) - warm
    assert spent <= 5, f"{net.where()}: {spent} snapshots in 60 ticks without a partition"


def refused_after_a_reset() -> tuple[SyncEngine, SyncEngine, SyncMessage]:
    """A stale message of an old incarnation of a resets b's record of a: b refuses a's interval."""
    a = SyncEngine("a", epoch=1)
    b = SyncEngine("b", epoch=2)
    for i in range(3):
        a.record_local(a.state.update("s", ORSet, adding(f"x{i}")))
        settle(a, b, rounds=1)
        settle(b, a, rounds=1)
    old = SyncEngine("a", epoch=7)  # a before it restarted; its request turns up late
    b.on_request(wire(old.request(None)))
    a.record_local(a.state.update("s", ORSet, adding("y")))
    refused, _ = b.on_request(wire(a.request("b")))
    assert refused.rewind and refused.refusals == 1
    return a, b, refused


def test_a_peer_whose_record_was_reset_gets_the_interval_again_after_the_rewind() -> None:
    a, b, refused = refused_after_a_reset()
    acked = a.peers["b"].ack
    a.on_response(wire(refused))
    assert refused.ack is not None and acked is not None and refused.ack[1] < acked
    assert a.peers["b"].ack == refused.ack[1]
    settle(a, b)
    assert a.state == b.state


def test_a_stale_rewind_is_ignored_and_the_next_refusal_counts() -> None:
    a, b, refused = refused_after_a_reset()
    late = encode_message(refused)  # held back
    later = wire(b.request("a"))  # no rewind flag (the held message has it), the same count
    assert not later.rewind and later.refusals == 1
    b.on_response(wire(a.on_request(later)[0]))  # a's interval still starts past b's record
    acked = a.peers["b"].ack
    a.on_response(decode_message(late))  # older than ``later``: not news
    assert a.peers["b"].ack == acked
    news = wire(b.request("a"))
    assert news.rewind and news.refusals == 2
    b.on_response(wire(a.on_request(news)[0]))
    settle(a, b)
    assert a.state == b.state


def test_the_rewind_of_a_revision_1_0_peer_is_believed() -> None:
    """A message of 13 items gives no count of refusals; its rewind lowers the ack as before."""
    a, b, refused = refused_after_a_reset()
    old = msgpack.packb(msgpack.unpackb(encode_message(refused))[:13], use_bin_type=True)
    message = decode_message(old)
    assert message.rewind and message.refusals is None and message.ack is not None
    a.on_response(message)
    assert a.peers["b"].ack == message.ack[1]
    settle(a, b)
    assert a.state == b.state


def test_an_abandoned_incoming_snapshot_does_not_block_repair() -> None:
    a = SyncEngine("a", max_message_bytes=BOUND, buffer_max_bytes=2000, epoch=1)
    b = SyncEngine("b", max_message_bytes=BOUND, epoch=2)
    c = SyncEngine("c", max_message_bytes=BOUND, epoch=3)
    fill(a, 20_000)
    settle(c, a)
    b.on_response(wire(a.on_request(wire(b.request(None)))[0]))  # piece 0 of a snapshot
    assert b.wants_more("a") and a.wants_more("b")
    settle(b, c)  # b gets everything from c instead
    a.on_request(wire(b.request(None)))  # so a drops its snapshot; this reply is lost
    for i in range(40):  # a writes on; its 2000-byte buffer no longer covers b's ack
        a.record_local(a.state.update("s", ORSet, adding(f"w{i}")))
    for _ in range(50):
        settle(a, b, rounds=1)
        settle(b, a, rounds=1)
    assert a.state == b.state, "100 loss-free exchanges and b still lacks a's writes"


def test_a_restart_during_snapshots_with_a_small_buffer_converges() -> None:
    """The simulation run that found it: a line of three, 30% loss, a 2000-byte buffer."""
    net = SimNet(20, 3, topology="line", faults=Faults(loss=0.3), buffer_max_bytes=2000)
    net.faults.max_delay = 5
    fill(net.engines["n00"], 9000)
    net.run(15, partitions=0.1)
    net.settle(max_rounds=80)
    net.check_writes()
    net.restart("n01")
    net.run(15, partitions=0.1)
    net.settle(max_rounds=80)


# -- peers ----------------------------------------------------------------------------------


def test_the_engine_keeps_at_most_max_peers_and_a_forgotten_peer_starts_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sender ids cost nothing to claim without a secret: their state must stay bounded."""
    monkeypatch.setattr("agentsync.sync.engine.MAX_PEERS", 3)
    hub = SyncEngine("hub")
    spokes = [SyncEngine(f"s{i}") for i in range(6)]
    for spoke in spokes:
        spoke.record_local(spoke.state.update("hits", GCounter, lambda c: c.increment()))
        for _ in range(3):
            reply, _ = hub.on_request(wire(spoke.request("hub")))
            spoke.on_response(wire(reply))
    assert list(hub.peers) == ["s3", "s4", "s5"], "the three heard from last are kept"
    assert hub.state.value == {"hits": 6}
    first = spokes[0]  # forgotten: it is answered as a new peer, and still converges
    for _ in range(3):
        reply, _ = hub.on_request(wire(first.request("hub")))
        first.on_response(wire(reply))
    assert list(hub.peers) == ["s4", "s5", "s0"]
    assert first.state == hub.state and hub.state.value == {"hits": 6}
