"""Bounded metadata in the sync layer: causal stability, pruning departed replicas, returnees.

Engines are driven directly (``SimNet``) with seeded loss, duplication and
reordering; time is a number passed in. Every failure names its seed.
"""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentsync.crdt import LWWMap, ORMap, PNCounter
from agentsync.errors import DecodeError
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from agentsync.sync.engine import VECTOR_EVERY
from agentsync.sync.pruning import Init, Performed, Pruning, PruningConfig, join_marker
from tests.sync.simnet import Faults, SimNet

FAULTS = Faults(loss=0.15, dup=0.15, reorder=True, max_delay=2)
CONFIG = PruningConfig(interval=1.0, prune_after=3.0, marker_ttl=1000.0)


def pruning_net(seed: int, n: int = 4) -> SimNet:
    net = SimNet(seed, n, faults=FAULTS)
    for node_id in net.ids:
        engine = net.engines[node_id]
        engine.pruning = Pruning(CONFIG)
    return net


def quiet_rounds(net: SimNet, rounds: int = 3) -> None:
    """Loss-free exchanges between every pair, so each has told the other its news."""
    for _ in range(rounds):
        for a in net.ids:
            for b in net.ids:
                if a != b:
                    net.exchange(a, b)


# -- causal stability -----------------------------------------------------------------------


def test_tombstones_go_once_every_live_peer_reported_a_covering_vector_and_never_before() -> None:
    net = SimNet(1, 3)
    a, b, c = net.ids
    net.write(a, "kv", LWWMap, lambda m: m.set("live", 0))  # an empty nested map keeps them
    net.write(a, "kv", LWWMap, lambda m: m.set("k", 1))
    net.write(a, "kv", LWWMap, lambda m: m.remove("k"))
    for _ in range(3):
        net.exchange(a, b)
        net.exchange(b, a)
    assert net.engines[a].peers[b].vector == {net.engines[a].state.replica_id: 3}
    assert net.engines[a].stable_vector([b, c]) is None, "c never reported: nothing is stable"
    assert net.engines[a].prune_stable([b, c]) == 0
    for _ in range(3):
        net.exchange(a, c)
        net.exchange(c, a)
    stable = net.engines[a].stable_vector([b, c])
    assert stable is not None and stable[net.engines[a].state.replica_id] == 3
    net.write(a, "kv", LWWMap, lambda m: m.set("m", 1))
    net.write(a, "kv", LWWMap, lambda m: m.remove("m"))
    for _ in range(3):
        net.exchange(a, b)
        net.exchange(b, a)
    kv = net.engines[a].state["kv"]
    assert isinstance(kv, LWWMap)
    assert net.engines[a].prune_stable([b, c]) == 1, "c lags: only k's tombstone is stable"
    assert kv._entries.keys() == {"live", "m"} and kv.value == {"live": 0}
    quiet_rounds(net)
    values = {i: e.state.value for i, e in net.engines.items()}
    dropped = {i: e.prune_stable([j for j in net.ids if j != i]) for i, e in net.engines.items()}
    assert dropped == {a: 1, b: 2, c: 2}
    assert {i: e.state.value for i, e in net.engines.items()} == values
    assert kv._entries.keys() == {"live"} and net.equal()


@pytest.mark.parametrize("seed", range(4))
def test_pruning_stable_tombstones_changes_no_value_and_replicas_converge(seed: int) -> None:
    net = SimNet(seed, 4, faults=FAULTS)
    for _ in range(4):
        net.run(10)
        for node_id in net.ids:  # whenever it can: with what the peers reported so far
            engine = net.engines[node_id]
            before = engine.state.value
            engine.prune_stable([i for i in net.ids if i != node_id])
            assert engine.state.value == before, f"seed={seed}: {node_id} changed a value"
    net.flush(everything=True)
    net.faults = Faults()
    quiet_rounds(net, 8)  # not settle(): pruned and unpruned states differ in tombstones only
    contexts = [e.state.context for e in net.engines.values()]
    assert all(ctx == contexts[0] for ctx in contexts), f"seed={seed}: not converged"
    dropped = sum(e.prune_stable([j for j in net.ids if j != i]) for i, e in net.engines.items())
    net.check_writes()
    values = [e.state.value for e in net.engines.values()]
    assert all(v == values[0] for v in values), f"seed={seed}: values differ"
    assert net.equal(), f"seed={seed}: states differ after every replica pruned ({dropped})"


# -- pruning departed replicas ------------------------------------------------------------


def step_all(net: SimNet, now: float, alive: dict[str, list[str]] | None = None) -> None:
    for node_id in net.ids:
        members = [i for i in net.ids if i != node_id]
        chosen = members if alive is None else alive[node_id]
        net.engines[node_id].prune_departed(now, members, chosen)


def run_pruning(net: SimNet, seed: int, start: float, steps: int = 12) -> None:
    now = start
    for _ in range(steps):
        net.run(2, write_prob=0.3)
        now += 1.0
        step_all(net, now)
    net.settle()
    for _ in range(3):
        quiet_rounds(net, 1)
        now += 1.0
        step_all(net, now)
    net.settle()


@pytest.mark.parametrize("seed", range(3))
def test_a_departed_replica_is_pruned_everywhere_and_values_stay(seed: int) -> None:
    net = pruning_net(seed)
    net.run(12)
    net.settle()
    gone = net.ids.pop()  # n03 leaves for good, its member removed everywhere
    departed = net.engines[gone]
    rid = departed.state.replica_id
    stale = departed.state.copy()
    for node_id in net.ids:
        net.engines[node_id].forget(gone)
    run_pruning(net, seed, 0.0)
    for node_id in net.ids:
        state = net.engines[node_id].state
        assert rid not in state.replica_ids(), f"seed={seed}: {node_id} still mentions {rid}"
        assert net.engines[node_id].pruning.pruned.keys() == {rid}, f"seed={seed}"
    net.check_writes()  # the oracle: every write shows, the departed replica's too
    # A stale delta of the departed replica, delivered late, is cleaned: nothing comes back.
    owner = net.engines[net.ids[1]]
    before = owner.state.value
    net.engines[net.ids[0]]._apply(stale, net.ids[2])
    net.settle()
    assert rid not in net.engines[net.ids[0]].state.replica_ids(), f"seed={seed}"
    assert owner.state.value == before, f"seed={seed}: the stale state changed values"
    net.check_writes()


def test_an_observer_with_the_lowest_id_acks_but_never_owns_a_pruning() -> None:
    """Its collapse would be a write it can never send: the lowest writer owns it instead."""
    net = pruning_net(5)
    net.run(12)
    net.settle()
    observer = net.ids[0]  # n00: the lowest id, which would start every round
    net.engines[observer].read_only = True
    gone = net.ids.pop()
    rid = net.engines[gone].state.replica_id
    for node_id in net.ids:
        net.engines[node_id].forget(gone)
    now = 0.0
    for _ in range(12):
        quiet_rounds(net, 1)
        now += 1.0
        step_all(net, now)
    quiet_rounds(net)
    for node_id in net.ids:
        engine = net.engines[node_id]
        assert rid not in engine.state.replica_ids(), f"{node_id} still mentions {rid}"
        assert engine.peers[observer].observer if node_id != observer else engine.read_only
    marker = net.engines[net.ids[1]].pruning.table[rid]
    assert isinstance(marker, Performed) and marker.owner == net.ids[1]
    assert net.equal()


def test_two_concurrent_initiators_end_with_one_owner_and_counters_never_double() -> None:
    seed = 7
    net = pruning_net(seed)
    net.write(net.ids[3], "hits", PNCounter, lambda c: c.increment(5))
    net.oracle.hits += 5  # write() does not tell the oracle
    net.settle()
    gone = net.ids.pop()
    rid = net.engines[gone].state.replica_id
    for node_id in net.ids:
        net.engines[node_id].forget(gone)
    a, b, c = net.ids
    # a does not count b alive, b does not count a: each thinks it is the lowest.
    views = {a: [c], b: [c], c: [a, b]}
    for now in (0.0, 4.0):
        step_all(net, now, views)
    assert isinstance(net.engines[a].pruning.table[rid], Init)
    assert isinstance(net.engines[b].pruning.table[rid], Init)
    assert net.engines[b].pruning.table[rid].owner == b  # type: ignore[union-attr]
    run_pruning(net, seed, 5.0)
    owners = {net.engines[i].pruning.table[rid].owner for i in net.ids}  # type: ignore[union-attr]
    assert owners == {a}, f"seed={seed}: owners {owners}"
    assert all(isinstance(net.engines[i].pruning.table[rid], Performed) for i in net.ids)
    assert all(net.engines[i].pruning.conflicts == 0 for i in net.ids)
    for node_id in net.ids:
        assert net.engines[node_id].state.value["hits"] == net.oracle.hits, f"seed={seed}"
        assert rid not in net.engines[node_id].state.replica_ids()


def test_a_live_replica_is_never_pruned_its_node_withholds_the_ack() -> None:
    seed = 3
    net = pruning_net(seed)
    net.run(6)
    net.settle()
    a, b, c, d = net.ids
    rid = net.engines[d].state.replica_id
    # a and b never met d (its member is unknown to them); c still gossips with it.
    for node_id in (a, b):
        net.engines[node_id].forget(d)
    members = {a: [b, c], b: [a, c], c: [a, b, d], d: [a, b, c]}
    for now in range(0, 30, 2):
        for node_id in net.ids:
            net.engines[node_id].prune_departed(float(now), members[node_id])
        quiet_rounds(net, 1)
        for node_id in (a, b):
            net.engines[node_id].forget(d)  # they keep not knowing d
    table = net.engines[a].pruning.table
    assert isinstance(table.get(rid), Init), f"seed={seed}: {table}"
    assert c not in table[rid].seen and d not in table[rid].seen  # type: ignore[union-attr]
    assert all(rid in net.engines[i].state.replica_ids() for i in net.ids)
    assert not any(net.engines[i].pruning.pruned for i in net.ids)


def test_a_replica_still_writing_is_not_pruned_though_no_node_counts_it_a_member() -> None:
    """A node behind a relay that no one lists as a member: its writes keep it live."""
    seed = 5
    net = pruning_net(seed)
    net.run(6)
    net.settle()
    a, b, c, d = net.ids
    rid = net.engines[d].state.replica_id
    members = {a: [b, c], b: [a, c], c: [a, b], d: [a, b, c]}

    def step(now: float, writing: bool) -> None:
        if writing:
            net.write(d, "hits", PNCounter, lambda n: n.increment())
        for node_id in net.ids:
            net.engines[node_id].prune_departed(now, members[node_id])
        quiet_rounds(net, 1)
        for node_id in (a, b, c):
            net.engines[node_id].forget(d)  # none of them counts d as a peer

    for now in range(0, 30, 2):
        step(float(now), writing=True)
    assert not any(isinstance(net.engines[i].pruning.table.get(rid), Performed) for i in net.ids)
    assert all(rid in net.engines[i].state.replica_ids() for i in (a, b, c)), f"seed={seed}"
    for now in range(30, 60, 2):  # d falls silent: now it looks departed, and goes
        step(float(now), writing=False)
    assert all(rid in net.engines[i].pruning.pruned for i in (a, b, c)), f"seed={seed}"


# -- a pruned replica that returns ------------------------------------------------------------


def test_a_returning_pruned_replica_is_refused_and_resyncs_under_a_new_id() -> None:
    seed = 11
    net = pruning_net(seed)
    net.run(8)
    net.settle()
    gone = net.ids.pop()
    returnee = net.engines[gone]
    rid = returnee.state.replica_id
    for node_id in net.ids:
        net.engines[node_id].forget(gone)
    run_pruning(net, seed, 0.0)
    values = net.engines[net.ids[0]].state.value
    returnee.state.update("hits", PNCounter, lambda c: c.increment(1000))  # never shared
    net.ids.append(gone)
    net.faults = Faults()
    net.exchange(gone, net.ids[0])
    assert returnee.pruned_out, f"seed={seed}: the returnee was not told"
    assert net.engines[net.ids[0]].state.value == values, "something of it was merged"
    net.exchange(net.ids[1], gone)  # it answers as it is; the requester merges nothing
    assert net.engines[net.ids[1]].state.value == values
    fresh = net.restart(gone)  # the Node's new incarnation: new id, empty state
    fresh.pruning = Pruning(CONFIG)
    assert fresh.state.replica_id != rid
    net.settle()
    assert all(net.engines[i].state.value == values for i in net.ids), f"seed={seed}"
    assert not any(rid in net.engines[i].state.replica_ids() for i in net.ids)


# -- the marker table: a semilattice -----------------------------------------------------------

ids = st.sampled_from(["a", "b", "c"])
markers = st.one_of(
    st.builds(
        Init,
        ids,
        st.integers(1, 3),
        st.frozensets(ids),
        st.frozensets(ids),
    ),
    st.builds(
        Performed, ids, st.sampled_from(["a.1", "b.1"]), st.integers(0, 2), st.integers(0, 2)
    ),
)


@given(markers, markers, markers)
def test_join_marker_is_commutative_associative_and_idempotent(
    x: Init | Performed, y: Init | Performed, z: Init | Performed
) -> None:
    assert join_marker(x, y) == join_marker(y, x)
    assert join_marker(join_marker(x, y), z) == join_marker(x, join_marker(y, z))
    assert join_marker(x, x) == x


# -- the wire: revision 1.2 -------------------------------------------------------------------


def message(**fields: object) -> SyncMessage:
    return SyncMessage("n1", "c", 1, 0, refusals=0, **fields)  # type: ignore[arg-type]


def test_revision_1_2_fields_travel_and_older_messages_still_decode() -> None:
    table = ((("r.1", Init("a", 2, frozenset("ab"), frozenset("abc"))),
              ("r.2", Performed("b", "b.1", 4, 9))))  # fmt: skip
    full = message(vector={"a.1": 3, "b.2": 7}, prune=table, pruned_you=True)
    assert decode_message(encode_message(full)) == full
    raw = msgpack.unpackb(encode_message(full), raw=False)
    assert len(raw) == 17
    old = decode_message(msgpack.packb(raw[:15], use_bin_type=True))
    assert old.vector is None and old.prune is None
    assert decode_message(encode_message(message())) == message()


VECTOR, PRUNE = 15, 16
BAD: list[tuple[str, int, object]] = [
    ("vector not bin", VECTOR, [["a"], [1]]),
    ("vector garbage", VECTOR, b"\xc1"),
    ("vector lengths", VECTOR, msgpack.packb([["a", "b"], [1]])),
    ("vector zero", VECTOR, msgpack.packb([["a"], [0]])),
    ("vector over int64", VECTOR, msgpack.packb([["a"], [2**63]])),
    ("vector id empty", VECTOR, msgpack.packb([[""], [1]])),
    ("vector id long", VECTOR, msgpack.packb([["x" * 300], [1]])),
    ("vector twice", VECTOR, msgpack.packb([["a", "a"], [1, 2]])),
    ("vector too many", VECTOR, msgpack.packb([[f"r{i}" for i in range(5000)], [1] * 5000])),
    ("prune not bin", PRUNE, []),
    ("prune row short", PRUNE, msgpack.packb([["r", 0, "a"]])),
    ("prune kind", PRUNE, msgpack.packb([["r", 7, "a", 1, [], []]])),
    ("prune round 0", PRUNE, msgpack.packb([["r", 0, "a", 0, [], []]])),
    ("prune seen not ids", PRUNE, msgpack.packb([["r", 0, "a", 1, [5], []]])),
    ("prune up_to negative", PRUNE, msgpack.packb([["r", 1, "a", "a.1", -1, 0]])),
    ("prune twice", PRUNE, msgpack.packb([["r", 1, "a", "a.1", 1, 1]] * 2)),
    ("prune too many", PRUNE, msgpack.packb([[f"r{i}", 1, "a", "a.1", 1, 1] for i in range(300)])),
]


@pytest.mark.parametrize(("label", "index", "value"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_revision_1_2_field_raises_decode_error(
    label: str, index: int, value: object
) -> None:
    raw = list(msgpack.unpackb(encode_message(message(vector={"a": 1}, prune=())), raw=False))
    raw += [None] * (17 - len(raw))
    raw[index] = value
    with pytest.raises(DecodeError):
        decode_message(msgpack.packb(raw, use_bin_type=True))


def test_a_reported_vector_is_kept_as_the_highest_heard_and_idle_exchanges_carry_none() -> None:
    a, b = SyncEngine("a", state=ORMap("a.1")), SyncEngine("b", state=ORMap("b.1"))
    a.record_local(a.state.update("hits", PNCounter, lambda c: c.increment(2)))
    sizes = []
    for _ in range(4):
        for x, y in ((a, b), (b, a)):
            request = encode_message(x.request(y.node_id))
            reply, _ = y.on_request(decode_message(request))
            response = encode_message(reply)
            x.on_response(decode_message(response))
            sizes.append((len(request), len(response)))
    assert b.peers["a"].vector == {"a.1": 1} and a.peers["b"].vector == {"a.1": 1}
    assert b.state.value == {"hits": 2}
    late = decode_message(encode_message(replace(a.request("b"), vector={"a.1": 1})))
    a.state.update("hits", PNCounter, lambda c: c.increment(1))
    b.on_request(decode_message(encode_message(replace(a.request("b"), vector={"a.1": 2}))))
    b.on_request(late)  # an older message, delivered late: its lower vector is old news
    assert b.peers["a"].vector == {"a.1": 2}
    assert max(map(max, sizes[-2:])) < 60, sizes


def test_answers_to_delta_intervals_carry_the_vector_now_and_then_a_calm_exchange_does() -> None:
    a, b = SyncEngine("a", state=ORMap("a.1")), SyncEngine("b", state=ORMap("b.1"))
    vectors = {"requests": 0, "responses": 0}
    rounds = 4 * VECTOR_EVERY
    for _ in range(rounds):  # a writes, b only answers: its vector changes with each merge
        a.record_local(a.state.update("hits", PNCounter, lambda c: c.increment(1)))
        request = decode_message(encode_message(a.request("b")))
        reply, _ = b.on_request(request)
        a.on_response(decode_message(encode_message(reply)))
        vectors["requests"] += request.vector is not None
        vectors["responses"] += reply.vector is not None
    assert max(vectors.values()) <= rounds // VECTOR_EVERY + 2, vectors
    reply, _ = b.on_request(decode_message(encode_message(a.request("b"))))  # calm: no deltas
    a.on_response(decode_message(encode_message(reply)))
    assert a.peers["b"].vector == b.peers["a"].vector == {"a.1": rounds}
