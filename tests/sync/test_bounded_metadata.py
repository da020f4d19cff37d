"""Issue 5's test: a million add/remove cycles leave metadata bounded by replicas and live elements.

Three ``SyncEngine``s, driven sans-IO (request, on_request, on_response, every
message through its wire form), each hold an ORSet under the name ``set``.
The workload toggles a few hot elements: at a replica, a random hot element
is removed if that replica sees it, added otherwise; each remove completes
one add/remove cycle. Three elements are added at the start and never
removed. Every ``GOSSIP_EVERY`` operations (split at random between the
replicas), each replica in turn starts one exchange with a random other.

How a million cycles fit in seconds: the operations are real ORSet
mutations on the very replica each engine holds (``SyncEngine.state``), but
each replica's share of the operations between two gossip rounds reaches its
engine as one delta: the join of their deltas, built by ``LocalGroup`` as the
engine's own buffer builds it from writes recorded one by one, and handed
over through ``ORMap.update`` and ``record_local``. That skips the ORMap
wrapping of each write (about 3 µs of 7), not one mutation, join or exchange.

At each checkpoint (10k, 100k and 1M cycles) the delta buffers are measured
as they are, in flight; then replica 0 removes every hot element, replica 1
adds two back, and the replicas settle, so that every checkpoint has the same
live elements (the 3 kept and 2 hot ones) and compares like for like. Then
each engine's metadata is measured in bytes: its encoded state
(``codec.encode``), its delta buffer, and its peer table (each ``PeerState``
packed with msgpack). Asserted:

* the bytes are at most a function of the replicas and the live elements,
  which charges every integer as an int64 so that no operation count can
  hide in it (``state_bound``, ``peer_table_bound``);
* with every integer counted as one byte, the bytes are the same at 10k,
  100k and 1M cycles: the metadata holds the same items, whatever the
  number of operations; what the integers themselves add is at most 2
  bytes each from 10k to 1M cycles (msgpack's uint16 to uint32);
* what a delta buffer holds between rounds is bounded by the gossip
  interval and the hot elements, not by the operations so far.

The seed is in every failure message; ``METADATA_SEED=n`` replays another.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from agentsync.crdt import ORMap, ORSet, encode
from agentsync.crdt.codec import COMPRESS_MIN_BYTES
from agentsync.crdt.group import LocalGroup
from agentsync.sync import SyncEngine, decode_message, encode_message
from agentsync.sync.engine import PeerState, _Told
from tests.sync.simnet import SimClock

SEED = int(os.environ.get("METADATA_SEED", "5"))
REPLICAS = 3
CYCLES = 1_000_000
CHECKPOINTS = (10_000, 100_000, CYCLES)
GOSSIP_EVERY = 3_000
"""Operations (adds and removes, over all replicas) between two gossip rounds."""
HOT = tuple(f"hot{i}" for i in range(6))
KEPT = ("kept0", "kept1", "kept2")
"""Added once at the start, never removed."""
LIVE_AT_CHECKPOINTS = (*KEPT, HOT[0], HOT[1])
IN_FLIGHT_BOUND = 16384
"""The most a delta buffer may hold right after a gossip round (it is ~2 KiB)."""

INT = 9
"""The widest msgpack integer (an int64): every counter and seq is charged this much."""


def str_bytes(text: str) -> int:
    """A msgpack str of up to 31 bytes: one header byte plus the bytes."""
    assert len(text.encode()) < 32
    return 1 + len(text.encode())


def state_bound(replica_ids: list[str], live: tuple[str, ...]) -> int:
    """The most bytes an encoded ``ORMap{"set": ORSet}`` of ``live`` can take.

    ``[version, tag, is_delta, replica ids, [vector, cloud], [["set"], ["os"], body]]``:
    a constant frame, then per replica its id and a vector entry (index, n),
    then per live element its key, its dot count and at most one dot per
    replica (a run of (index, length) and a counter). A compact context has
    an empty cloud.
    """
    frame = 32 + str_bytes("om") + str_bytes("set") + str_bytes("os")
    per_replica = sum(str_bytes(rid) for rid in replica_ids) + len(replica_ids) * (1 + INT)
    per_dot = 1 + 1 + INT
    per_element = sum(str_bytes(e) + 1 for e in live) + len(live) * len(replica_ids) * per_dot
    return frame + per_replica + per_element


def peer_table_bound(node_ids: list[str], replica_ids: list[str]) -> int:
    """Per peer: its id, then each field of its record at most an int64 or a replica id."""
    widest = max(INT, *map(str_bytes, replica_ids))
    told = len(fields(_Told)) - 1  # each _Told field is a field of its own (less the one it is)
    per_field = (len(fields(PeerState)) + 2 * told) * widest
    reported = sum(map(str_bytes, replica_ids)) + len(replica_ids) * INT  # the peer's vector
    per_peer = 1 + max(map(str_bytes, node_ids)) + per_field + reported
    return 1 + (len(node_ids) - 1) * per_peer


def peer_table(engine: SyncEngine) -> bytes:
    """Every peer's record, packed (a snapshot under way counts as its bytes)."""
    rows: list[list[Any]] = []
    for peer_id, peer in sorted(engine.peers.items()):
        row: list[Any] = [peer_id]
        for f in fields(PeerState):
            value = getattr(peer, f.name)
            if f.name == "outgoing" and value is not None:
                value = len(value.data)
            elif f.name == "incoming" and value is not None:
                value = sum(map(len, value.parts))
            if isinstance(value, dict):  # the peer's reported vector
                value = sorted(value.items())
            if isinstance(value, _Told):
                row += [getattr(value, t.name) for t in fields(_Told)]
                continue
            row.append(value)
        rows.append(row)
    return msgpack.packb(rows)  # type: ignore[no-any-return]


def zeroed(tree: Any) -> Any:
    """A msgpack tree with every integer 0 (None too: both pack as one byte)."""
    if isinstance(tree, (list, tuple)):
        return [zeroed(item) for item in tree]
    if isinstance(tree, int) and not isinstance(tree, bool):
        return 0
    return tree


def shape_bytes(data: bytes) -> int:
    """The size of msgpack ``data`` with every integer counted as one byte: its items."""
    return len(msgpack.packb(zeroed(msgpack.unpackb(data, strict_map_key=False))))


def int_count(tree: Any) -> int:
    if isinstance(tree, (list, tuple)):
        return sum(int_count(item) for item in tree)
    return int(isinstance(tree, int) and not isinstance(tree, bool))


@dataclass
class Measure:
    """One engine's metadata at a checkpoint, in bytes."""

    state: int
    buffer: int
    peers: int
    shape: int
    """``state + peers`` with every integer counted as one byte."""
    ints: int
    """How many integers ``state + peers`` hold."""

    @property
    def total(self) -> int:
        return self.state + self.buffer + self.peers


class Cluster:
    """Three engines, the workload, and the exchanges between them."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        clock = SimClock()
        self.ids = [f"n{i}" for i in range(REPLICAS)]
        self.engines = [
            SyncEngine(
                i, state=ORMap(f"{i}.0", clock=clock), epoch=self.rng.getrandbits(63), cluster="m"
            )
            for i in self.ids
        ]
        self.cycles = 0
        self.ops = 0
        self.rounds = 0
        self.exchanges = 0
        self.wire_bytes = 0
        self.peak_buffer = 0
        """The most bytes any delta buffer held right after a gossip round."""

    def where(self) -> str:
        return f"seed={self.seed} cycles={self.cycles} ops={self.ops} rounds={self.rounds}"

    # -- the workload ---------------------------------------------------------

    def write(self, index: int, fn: Callable[[ORSet], ORSet]) -> None:
        """Apply ``fn`` to replica ``index``'s set and give the engine its delta."""
        engine = self.engines[index]
        engine.record_local(engine.state.update("set", ORSet, fn))

    def batch(self, index: int, ops: int, *, until: int) -> None:
        """``ops`` toggles of hot elements at replica ``index``, recorded as one delta."""
        picks = self.rng.choices(HOT, k=ops)

        def toggle(s: ORSet) -> ORSet:
            group = LocalGroup(s)
            add = group.add
            for element in picks:
                self.ops += 1
                if element in s:
                    add(s.remove(element))
                    self.cycles += 1
                    if self.cycles >= until:
                        break
                else:
                    add(s.add(element))
            return group.build()

        self.write(index, toggle)

    def run_until(self, cycles: int) -> None:
        """Toggle, gossiping every ``GOSSIP_EVERY`` operations, until ``cycles`` cycles."""
        rng = self.rng
        while self.cycles < cycles:
            cuts = sorted(rng.randrange(GOSSIP_EVERY + 1) for _ in range(REPLICAS - 1))
            shares = [b - a for a, b in zip([0, *cuts], [*cuts, GOSSIP_EVERY], strict=True)]
            for index, share in enumerate(shares):
                if share and self.cycles < cycles:
                    self.batch(index, share, until=cycles)
            self.gossip()

    def normalize(self) -> None:
        """Leave the checkpoint's live elements: the kept ones and two hot ones.

        Settled first, so that replica 0's removes observe every hot add.
        """
        self.settle()

        def remove_hot(s: ORSet) -> ORSet:
            group = LocalGroup(s)
            for element in HOT:
                if element in s:
                    group.add(s.remove(element))
                    self.ops += 1
                    self.cycles += 1
            return group.build() if group.writes else s.discard(HOT[0])

        def add_two(s: ORSet) -> ORSet:
            delta = s.add(HOT[0])
            delta.merge(s.add(HOT[1]))
            self.ops += 2
            return delta

        self.write(0, remove_hot)
        self.settle()
        self.write(1, add_two)
        self.settle()

    # -- exchanges -------------------------------------------------------------

    def exchange(self, a: int, b: int) -> None:
        """One exchange started by engine ``a`` with engine ``b``, through the wire form."""
        initiator, responder = self.engines[a], self.engines[b]
        request = encode_message(initiator.request(responder.node_id))
        response, _ = responder.on_request(decode_message(request))
        data = encode_message(response)
        initiator.on_response(decode_message(data))
        self.exchanges += 1
        self.wire_bytes += len(request) + len(data)

    def gossip(self) -> None:
        """Each replica, in a random order, starts one exchange with a random other."""
        rng = self.rng
        order = list(range(REPLICAS))
        rng.shuffle(order)
        for a in order:
            self.exchange(a, rng.choice([b for b in range(REPLICAS) if b != a]))
        self.rounds += 1
        self.peak_buffer = max(self.peak_buffer, *(e.delta_buffer_bytes for e in self.engines))

    def settle(self) -> None:
        """Exchange between every ordered pair until all states are equal and no buffer holds."""
        for _ in range(6):
            for a in range(REPLICAS):
                for b in range(REPLICAS):
                    if a != b:
                        self.exchange(a, b)
            states = [e.state for e in self.engines]
            if all(s == states[0] for s in states) and not any(
                e.delta_buffer_bytes for e in self.engines
            ):
                return
        raise AssertionError(f"{self.where()}: six loss-free rounds did not settle")

    # -- measuring -------------------------------------------------------------

    def measure(self) -> list[Measure]:
        out = []
        for engine in self.engines:
            state, peers = encode(engine.state), peer_table(engine)
            assert len(state) < COMPRESS_MIN_BYTES  # not deflated: msgpack all through
            both = [msgpack.unpackb(state), msgpack.unpackb(peers)]
            out.append(
                Measure(
                    len(state),
                    engine.delta_buffer_bytes,
                    len(peers),
                    shape_bytes(state) + shape_bytes(peers),
                    int_count(both),
                )
            )
        return out

    def check_structure(self) -> None:
        """What the bytes are made of: R vector entries, no cloud, no tombstone, no buffer."""
        where = self.where()
        replica_ids = sorted(e.state.replica_id for e in self.engines)
        for engine in self.engines:
            state = engine.state
            ctx = state.context
            assert ctx.cloud == frozenset(), f"{where}: {engine.node_id} keeps a cloud: {ctx!r}"
            assert sorted(ctx.version_vector) == replica_ids, f"{where}: {ctx!r}"
            s = state["set"]
            assert isinstance(s, ORSet)
            assert s.value == frozenset(LIVE_AT_CHECKPOINTS), f"{where}: {s.value}"
            assert sorted(s._entries) == sorted(LIVE_AT_CHECKPOINTS), f"{where}: tombstones"
            assert all(len(dots) == 1 for dots in s._entries.values()), f"{where}: {s._entries}"
            assert list(state._fields) == ["set"], where
            assert engine.delta_buffer_bytes == 0 and len(engine._buffer) == 0, where
            assert sorted(engine.peers) == sorted(set(self.ids) - {engine.node_id}), where
            assert engine.metrics.full_state_fallbacks == 0, f"{where}: a snapshot was needed"
            assert engine.state == self.engines[0].state, f"{where}: not converged"
        issued = sum(self.engines[0].state.context.version_vector.values())
        assert issued == self.ops + len(KEPT), f"{where}: {issued} dots for {self.ops} ops"


def add_all(elements: tuple[str, ...]) -> Callable[[ORSet], ORSet]:
    def fn(s: ORSet) -> ORSet:
        delta = s.add(elements[0])
        for element in elements[1:]:
            delta.merge(s.add(element))
        return delta

    return fn


def test_a_million_add_remove_cycles_leave_metadata_bounded_by_replicas_and_live_elements() -> None:
    started = time.perf_counter()
    cluster = Cluster(SEED)
    cluster.settle()  # every pair has met: each engine tracks its peers from the first write
    cluster.write(0, add_all(KEPT))
    replica_ids = sorted(e.state.replica_id for e in cluster.engines)
    bound = state_bound(replica_ids, LIVE_AT_CHECKPOINTS) + peer_table_bound(
        cluster.ids, replica_ids
    )
    measures: dict[int, list[Measure]] = {}
    in_flight: dict[int, list[int]] = {}
    for checkpoint in CHECKPOINTS:
        cluster.run_until(checkpoint)
        in_flight[checkpoint] = [e.delta_buffer_bytes for e in cluster.engines]
        cluster.normalize()
        cluster.check_structure()
        measures[checkpoint] = cluster.measure()
    elapsed = time.perf_counter() - started

    report = "\n".join(
        f"  {c:>9} cycles: "
        + ", ".join(f"{m.state}+{m.buffer}+{m.peers}={m.total} ({m.shape})" for m in ms)
        + f"; in flight {in_flight[c]}"
        for c, ms in measures.items()
    )
    summary = (
        f"{cluster.where()}: metadata bytes per engine, state+buffer+peers=total "
        f"(ints as 1 byte), bound {bound}:\n{report}\n"
        f"  peak buffer after a gossip round {cluster.peak_buffer} bytes; "
        f"{cluster.exchanges} exchanges, {cluster.wire_bytes} wire bytes; {elapsed:.1f} s"
    )
    print(summary)
    assert cluster.cycles >= CYCLES, summary
    for ms in measures.values():
        for m in ms:
            assert m.total <= bound, f"over the bound of replicas and live elements\n{summary}"
    first = measures[CHECKPOINTS[0]]
    for checkpoint in CHECKPOINTS[1:]:
        for early, late in zip(first, measures[checkpoint], strict=True):
            assert late.shape == early.shape, f"the metadata holds more items\n{summary}"
            assert late.total <= early.total + 2 * early.ints, f"it grew\n{summary}"
    held = max(cluster.peak_buffer, *(b for bs in in_flight.values() for b in bs))
    assert held <= IN_FLIGHT_BOUND, f"a delta buffer held too much between rounds\n{summary}"
