"""A deterministic simulated network of in-process SyncEngines.

Everything random comes from one ``random.Random(seed)``: the workload, the
gossip partners, and the network's faults (loss, duplication, reordering,
delay). Time is a tick counter and the wall clock of every replica is one
shared ``SimClock``, so a seed replays the same run on any machine.

An exchange is a request from the initiator, answered by the responder when
(if) it arrives, with the response travelling back on its own. Each leg is an
``Envelope`` of bytes: every message goes through ``encode_message`` and
``decode_message``, and every encoded message is checked against the
sender's ``max_message_bytes``. Each leg may be lost, duplicated, or delayed
by up to ``max_delay`` ticks, and due envelopes are delivered in random order
when ``reorder`` is set, so a response can arrive after later exchanges.

The ``Oracle`` records every write and knows what any converged replica must
show. Every failure message starts with ``seed=...`` so a failing run can be
replayed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from agentsync.crdt import (
    CRDT,
    EWFlag,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
)
from agentsync.sync import SyncEngine, SyncMessage, decode_message, encode_message
from agentsync.sync.engine import DEFAULT_BUFFER_BYTES

CLOCK_BASE_NS = 1_700_000_000 * 10**9
"""The simulated wall clock starts here (late 2023, in nanoseconds)."""

Kind = Literal["req", "resp"]
Topology = Literal["random", "line", "star"]
N = TypeVar("N", bound=CRDT)

TAGS = [f"e{i}" for i in range(12)]
KV_KEYS = [f"k{i}" for i in range(6)]
TMP_KEYS = [f"tmp{i}" for i in range(3)]
REMOVED = object()
"""The oracle's mark for an LWWMap key whose last write was a remove."""


class SimClock:
    """One wall clock for every replica; each reading advances it by 1 µs.

    Timestamps therefore follow the program order of the whole simulation:
    the last LWW write issued anywhere is the one that must win.
    """

    def __init__(self) -> None:
        self.ns = CLOCK_BASE_NS

    def __call__(self) -> int:
        self.ns += 1000
        return self.ns


_ABSENT = object()
"""A name's value before it exists or after it is gone (``deliver``'s check)."""


@dataclass
class Faults:
    """What the network does to each leg of an exchange."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: bool = False
    max_delay: int = 0

    @property
    def clean(self) -> bool:
        return not (self.loss or self.dup or self.reorder or self.max_delay)


@dataclass
class Envelope:
    """One leg of an exchange, in flight."""

    order: int
    kind: Kind
    src: str
    dst: str
    data: bytes
    due: int


@dataclass
class Oracle:
    """Every write made, and what a converged replica must therefore show."""

    tags_added: set[str] = field(default_factory=set)
    tags_removed: set[str] = field(default_factory=set)
    members_added: set[str] = field(default_factory=set)
    members_removed: set[str] = field(default_factory=set)
    hits: int = 0
    count: int = 0
    sub_count: int = 0
    title_last: str | None = None
    notes_written: set[str] = field(default_factory=set)
    notes_last: str | None = None
    flag_last: str | None = None
    kv_last: dict[str, object] = field(default_factory=dict)
    writes: int = 0

    def problems(self, state: ORMap) -> list[str]:
        """What ``state`` gets wrong (empty when it shows every write)."""
        out: list[str] = []
        value = state.value

        def check(ok: bool, what: str) -> None:
            if not ok:
                out.append(what)

        tags = set(value.get("tags", frozenset()))
        check(self.tags_added - self.tags_removed <= tags, f"tags lost: {tags=} {self!r}")
        check(tags <= self.tags_added, f"tags never added: {tags - self.tags_added}")
        check(value.get("hits", 0) == self.hits, f"hits {value.get('hits')} != {self.hits}")
        check(value.get("title") == self.title_last, f"title {value.get('title')!r}")
        notes = set(value.get("notes", ()))
        check(notes <= self.notes_written, f"notes never written: {notes}")
        if self.notes_last is not None:
            check(self.notes_last in notes, f"last note {self.notes_last} missing from {notes}")
        if self.flag_last == "enable":
            check(value.get("flag") is True, "flag: the last op was enable, yet it is off")
        kv = value.get("kv", {})
        for key, last in self.kv_last.items():
            if last is REMOVED:
                check(key not in kv, f"kv[{key}] was removed last, yet holds {kv.get(key)!r}")
            else:
                check(kv.get(key) == last, f"kv[{key}] = {kv.get(key)!r}, last set {last!r}")
        docs = value.get("docs", {})
        check(docs.get("count", 0) == self.count, f"docs.count {docs.get('count')} != {self.count}")
        sub = docs.get("sub", {})
        check(sub.get("c", 0) == self.sub_count, f"docs.sub.c {sub.get('c')} != {self.sub_count}")
        members = set(docs.get("members", frozenset()))
        check(
            self.members_added - self.members_removed <= members,
            f"members lost: {self.members_added - self.members_removed - members}",
        )
        check(members <= self.members_added, "members never added")
        return out


class SimNet:
    """N engines, a lossy message queue, partitions, and a random workload."""

    def __init__(
        self,
        seed: int,
        n: int,
        *,
        topology: Topology = "random",
        fanout: int = 2,
        faults: Faults | None = None,
        max_message_bytes: int = 16384,
        buffer_max_bytes: int = DEFAULT_BUFFER_BYTES,
        bp: bool = True,
        rr: bool = True,
        cluster: str = "sim",
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.topology = topology
        self.fanout = fanout
        self.faults = faults or Faults()
        self.initial_faults = self.faults
        self.config: dict[str, Any] = {
            "cluster": cluster,
            "max_message_bytes": max_message_bytes,
            "buffer_max_bytes": buffer_max_bytes,
            "bp": bp,
            "rr": rr,
        }
        self.ids = [f"n{i:02d}" for i in range(n)]
        self.incarnations: Counter[str] = Counter()
        self.engines: dict[str, SyncEngine] = {i: self.fresh_engine(i) for i in self.ids}
        self.queue: list[Envelope] = []
        self.groups: list[frozenset[str]] | None = None
        self.now = 0
        self.oracle = Oracle()
        self._order = 0
        self.sent: Counter[str] = Counter()
        """Messages put on the wire, by kind, and lost/duplicated/dropped counts."""
        self.bytes_sent: Counter[str] = Counter()
        self.max_bytes: Counter[str] = Counter()
        self.recorded: list[tuple[Kind, bytes]] | None = None
        """Every message put on the wire, when set to a list (a fuzzing corpus)."""

    # -- set-up -----------------------------------------------------------------

    def where(self) -> str:
        """The prefix of every failure message: enough to replay the run."""
        return (
            f"seed={self.seed} tick={self.now} n={len(self.ids)} topology={self.topology} "
            f"faults={self.initial_faults} config={self.config}"
        )

    def fresh_engine(self, node_id: str) -> SyncEngine:
        """A new engine with an empty state on the shared clock and a seeded epoch.

        As the Node does, each incarnation writes under its own replica id
        (``n01.0``, then ``n01.1`` after a restart), so that a restart without
        its data never reissues a dot.
        """
        incarnation = self.incarnations[node_id]
        self.incarnations[node_id] += 1
        return SyncEngine(
            node_id,
            state=ORMap(f"{node_id}.{incarnation}", clock=self.clock),
            epoch=self.rng.getrandbits(63),
            **self.config,
        )

    def restart(self, node_id: str) -> SyncEngine:
        """Replace a node by a fresh engine: same id, empty state, new epoch."""
        engine = self.engines[node_id] = self.fresh_engine(node_id)
        return engine

    def neighbours(self, node_id: str) -> list[str]:
        """Every node ``node_id`` may gossip with under the topology."""
        ids = self.ids
        if self.topology == "line":
            i = ids.index(node_id)
            return [ids[j] for j in (i - 1, i + 1) if 0 <= j < len(ids)]
        if self.topology == "star":
            return ids[1:] if node_id == ids[0] else [ids[0]]
        return [other for other in ids if other != node_id]

    def partners(self, node_id: str) -> list[str]:
        """This tick's gossip partners: ``fanout`` random ones, or all in line/star."""
        neighbours = self.neighbours(node_id)
        if self.topology == "random":
            return self.rng.sample(neighbours, min(self.fanout, len(neighbours)))
        return neighbours

    # -- partitions ---------------------------------------------------------------

    def partition(self, *groups: Sequence[str]) -> None:
        """Split the network: nodes in different groups cannot reach each other."""
        self.groups = [frozenset(group) for group in groups]

    def random_partition(self) -> None:
        ids = list(self.ids)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        self.partition(ids[:cut], ids[cut:])

    def heal(self) -> None:
        self.groups = None

    def connected(self, a: str, b: str) -> bool:
        if self.groups is None:
            return True
        return any(a in group and b in group for group in self.groups)

    # -- the wire -------------------------------------------------------------------

    def wire(self, engine: SyncEngine, message: SyncMessage, kind: Kind) -> bytes:
        """Encode a message and check it against the sender's bound."""
        data = encode_message(message)
        bound = engine.max_message_bytes
        assert len(data) <= bound, (
            f"{self.where()}: {engine.node_id} composed a {kind} of {len(data)} bytes, "
            f"over its max_message_bytes={bound} (context={message.context is not None}, "
            f"deltas={len(message.deltas)}, piece={message.piece is not None})"
        )
        self.sent[kind] += 1
        self.bytes_sent[kind] += len(data)
        self.max_bytes[kind] = max(self.max_bytes[kind], len(data))
        if self.recorded is not None:
            self.recorded.append((kind, data))
        return data

    def _post(self, kind: Kind, src: str, dst: str, data: bytes) -> None:
        faults = self.faults
        if faults.loss and self.rng.random() < faults.loss:
            self.sent["lost"] += 1
            return
        copies = 2 if faults.dup and self.rng.random() < faults.dup else 1
        self.sent["duplicated"] += copies - 1
        for _ in range(copies):
            delay = self.rng.randint(0, faults.max_delay) if faults.max_delay else 0
            self._order += 1
            self.queue.append(Envelope(self._order, kind, src, dst, data, self.now + delay))

    def start(self, a: str, b: str) -> None:
        """``a`` starts an exchange with ``b`` (by id once it knows ``b``)."""
        engine = self.engines[a]
        message = engine.request(b if b in engine.peers else None)
        self._post("req", a, b, self.wire(engine, message, "req"))

    def deliver(self, envelope: Envelope) -> None:
        """Hand one envelope to its destination (dropped across a partition)."""
        if not self.connected(envelope.src, envelope.dst):
            self.sent["partitioned"] += 1
            return
        engine = self.engines[envelope.dst]
        message = decode_message(envelope.data)
        before = engine.state.value
        try:
            if envelope.kind == "req":
                response, changed = engine.on_request(message)
                data = self.wire(engine, response, "resp")
                self._post("resp", envelope.dst, envelope.src, data)
            else:
                changed = engine.on_response(message)
        except Exception as exc:
            raise AssertionError(
                f"{self.where()}: {envelope.dst} failed on a {envelope.kind} from "
                f"{envelope.src}: {exc!r}"
            ) from exc
        on = f"a {envelope.kind} from {envelope.src}"
        self._check_reported(envelope.dst, before, changed, on)

    def _check_reported(
        self, node_id: str, before: dict[Hashable, Any], changed: frozenset[str], on: str
    ) -> None:
        """Every name whose value a message changed is among the names the engine reported."""
        after = self.engines[node_id].state.value
        unreported = {
            name
            for name in before.keys() | after.keys()
            if before.get(name, _ABSENT) != after.get(name, _ABSENT) and name not in changed
        }
        assert not unreported, (
            f"{self.where()}: {node_id} changed {sorted(unreported)} on {on} and did not say so"
        )

    def flush(self, *, everything: bool = False) -> None:
        """Deliver every envelope that is due (all of them with ``everything``)."""
        while True:
            due = [e for e in self.queue if everything or e.due <= self.now]
            if not due:
                return
            pick = self.rng.choice(due) if self.faults.reorder else min(due, key=_order)
            self.queue.remove(pick)
            self.deliver(pick)

    def deliver_at(self, index: int) -> None:
        """Deliver the ``index``-th envelope in flight (modulo), whenever it is due."""
        if self.queue:
            self.deliver(self.queue.pop(index % len(self.queue)))

    def drop_at(self, index: int) -> None:
        """Lose the ``index``-th envelope in flight (modulo)."""
        if self.queue:
            self.queue.pop(index % len(self.queue))
            self.sent["lost"] += 1

    def duplicate_at(self, index: int) -> None:
        """Put a second copy of the ``index``-th envelope in flight (modulo)."""
        if self.queue:
            envelope = self.queue[index % len(self.queue)]
            self._order += 1
            self.queue.append(replace(envelope, order=self._order))
            self.sent["duplicated"] += 1

    def exchange(self, a: str, b: str) -> tuple[int, int]:
        """A loss-free exchange at once; returns the request's and response's sizes."""
        ea, eb = self.engines[a], self.engines[b]
        request = self.wire(ea, ea.request(b if b in ea.peers else None), "req")
        before = eb.state.value
        response, changed = eb.on_request(decode_message(request))
        self._check_reported(b, before, changed, f"a req from {a}")
        reply = self.wire(eb, response, "resp")
        before = ea.state.value
        self._check_reported(a, before, ea.on_response(decode_message(reply)), f"a resp from {b}")
        return len(request), len(reply)

    # -- the workload ------------------------------------------------------------------

    def write(self, node_id: str, name: str, kind: type[N], fn: Callable[[N], N]) -> None:
        """One local write at a node, recorded so that it spreads."""
        engine = self.engines[node_id]
        delta = engine.state.update(name, kind, fn)
        engine.record_local(delta)
        self.oracle.writes += 1

    def random_write(self, node_id: str, op: int | None = None) -> None:
        """One random write from the workload; ``op`` picks the kind of write."""
        rng, oracle = self.rng, self.oracle
        state = self.engines[node_id].state
        op = rng.randrange(len(_OPS)) if op is None else op % len(_OPS)
        label = f"{node_id}-{oracle.writes}"
        what = _OPS[op]
        if what == "tag_add":
            tag = rng.choice(TAGS)
            oracle.tags_added.add(tag)
            self.write(node_id, "tags", ORSet, lambda s: s.add(tag))
        elif what == "tag_remove":
            tags = state.get("tags")
            present = sorted(tags.value) if tags is not None else []
            if not present:
                return self.random_write(node_id, _OPS.index("tag_add"))
            tag = rng.choice(present)
            oracle.tags_removed.add(tag)
            self.write(node_id, "tags", ORSet, lambda s: s.remove(tag))
        elif what == "hits":
            n = rng.randint(1, 5)
            if rng.random() < 0.3:
                oracle.hits -= n
                self.write(node_id, "hits", PNCounter, lambda c: c.decrement(n))
            else:
                oracle.hits += n
                self.write(node_id, "hits", PNCounter, lambda c: c.increment(n))
        elif what == "title":
            oracle.title_last = label
            self.write(node_id, "title", LWWRegister, lambda r: r.set(label))
        elif what == "notes":
            oracle.notes_last = label
            oracle.notes_written.add(label)
            self.write(node_id, "notes", MVRegister, lambda r: r.set(label))
        elif what == "flag":
            if rng.random() < 0.5:
                oracle.flag_last = "enable"
                self.write(node_id, "flag", EWFlag, lambda f: f.enable())
            else:
                oracle.flag_last = "disable"
                self.write(node_id, "flag", EWFlag, lambda f: f.disable())
        elif what == "kv":
            key = rng.choice(KV_KEYS)
            kv = state.get("kv")
            if kv is not None and key in kv and rng.random() < 0.4:
                oracle.kv_last[key] = REMOVED
                self.write(node_id, "kv", LWWMap, lambda m: m.remove(key))
            else:
                oracle.kv_last[key] = label
                self.write(node_id, "kv", LWWMap, lambda m: m.set(key, label))
        else:
            self._docs_write(node_id, state, label)
        return None

    def _docs_write(self, node_id: str, state: ORMap, label: str) -> None:
        """Writes into the nested ORMap ``docs``: counters, a set, a map, key removals."""
        rng, oracle = self.rng, self.oracle
        docs = state.get("docs")
        choice = rng.randrange(5)
        if choice == 0:
            n = rng.randint(1, 3)
            oracle.count += n
            self.write(node_id, "docs", ORMap, lambda m: m.update("count", PNCounter, _inc(n)))
        elif choice == 1:
            n = rng.randint(1, 3)
            oracle.sub_count += n
            self.write(
                node_id,
                "docs",
                ORMap,
                lambda m: m.update("sub", ORMap, lambda s: s.update("c", PNCounter, _inc(n))),
            )
        elif choice == 2:
            members = docs.get("members") if docs is not None else None
            if members is not None and len(members) and rng.random() < 0.4:
                member = rng.choice(sorted(members.value))
                oracle.members_removed.add(member)
                self.write(
                    node_id,
                    "docs",
                    ORMap,
                    lambda m: m.update("members", ORSet, lambda s: s.remove(member)),
                )
            else:
                member = rng.choice(TAGS)
                oracle.members_added.add(member)
                self.write(
                    node_id,
                    "docs",
                    ORMap,
                    lambda m: m.update("members", ORSet, lambda s: s.add(member)),
                )
        else:
            key = rng.choice(TMP_KEYS)
            if choice == 4 and docs is not None and key in docs:
                self.write(node_id, "docs", ORMap, lambda m: m.remove(key))
            else:
                self.write(
                    node_id,
                    "docs",
                    ORMap,
                    lambda m: m.update(key, ORMap, lambda t: t.update("n", PNCounter, _inc(1))),
                )

    # -- running --------------------------------------------------------------------------

    def tick(self, write_prob: float = 0.5) -> None:
        """One tick: random writes, one round of gossip, deliveries that are due."""
        for node_id in self.ids:
            if self.rng.random() < write_prob:
                self.random_write(node_id)
        for node_id in self.ids:
            for other in self.partners(node_id):
                self.start(node_id, other)
        self.flush()
        self.now += 1

    def run(self, ticks: int, *, write_prob: float = 0.5, partitions: float = 0.0) -> None:
        """``ticks`` ticks; with probability ``partitions`` per tick, split or heal."""
        for _ in range(ticks):
            if partitions and self.rng.random() < partitions:
                if self.groups is None:
                    self.random_partition()
                else:
                    self.heal()
            self.tick(write_prob)

    def equal(self) -> bool:
        """Every replica's state is equal."""
        first = self.engines[self.ids[0]].state
        return all(self.engines[i].state == first for i in self.ids[1:])

    def busy(self) -> list[tuple[str, str]]:
        """The (node, peer) pairs whose engine says a snapshot is under way."""
        return [
            (node_id, peer)
            for node_id, engine in self.engines.items()
            for peer in engine.peers
            if engine.wants_more(peer)
        ]

    def converged(self) -> bool:
        """Every replica equal, and no snapshot under way anywhere."""
        return self.equal() and not self.busy()

    def settle(self, max_rounds: int = 60, *, quiet: bool = True) -> int:
        """Heal, stop the faults, deliver what is in flight, and gossip until converged.

        With ``quiet`` (the default) converged also means no snapshot is under
        way; without it, equal states are enough.

        Each quiet round, every node exchanges with each of its neighbours (or
        ``fanout`` random ones) without loss. Returns the rounds it took; fails
        (with the seed) if ``max_rounds`` are not enough.
        """
        self.heal()
        self.flush(everything=True)
        self.faults = Faults()
        for rounds in range(max_rounds + 1):
            if self.converged() if quiet else self.equal():
                return rounds
            for node_id in self.ids:
                for other in self.partners(node_id):
                    self.exchange(node_id, other)
            self.now += 1
        raise AssertionError(
            f"{self.where()}: not converged after {max_rounds} quiet rounds: {self.describe()}"
        )

    def describe(self) -> str:
        """Each node's sizes and its view of every peer, for a failure message."""
        first = self.engines[self.ids[0]].state
        lines = []
        for node_id in self.ids:
            engine = self.engines[node_id]
            same = "=" if engine.state == first else "!="
            lines.append(f"{node_id} {same}n00 head={engine.head} {engine.metrics}")
            for peer_id, peer in engine.peers.items():
                incoming = peer.incoming and (peer.incoming.transfer, len(peer.incoming.parts))
                outgoing = peer.outgoing and (peer.outgoing.transfer, peer.outgoing.next)
                lines.append(
                    f"  {peer_id}: ack={peer.ack} merged={peer.merged} pending={peer.pending} "
                    f"needs={peer.needs_snapshot} wants={peer.wants_snapshot} "
                    f"incoming={incoming} outgoing={outgoing}"
                )
        return "\n".join(lines)

    def check_writes(self) -> None:
        """Every replica shows every write (the oracle's view)."""
        for node_id in self.ids:
            problems = self.oracle.problems(self.engines[node_id].state)
            assert not problems, f"{self.where()}: {node_id}: {problems}"


_OPS = ["tag_add", "tag_remove", "hits", "title", "notes", "flag", "kv", "docs"]


def _order(envelope: Envelope) -> int:
    return envelope.order


def adding(element: str) -> Callable[[ORSet], ORSet]:
    """The update function that adds ``element`` to an ORSet."""
    return lambda s: s.add(element)


def _inc(n: int) -> Callable[[PNCounter], PNCounter]:
    return lambda c: c.increment(n)


def snapshot_of(engine: SyncEngine) -> dict[str, object]:
    """What an error must leave unchanged: state, context, head, and per-peer acks."""
    return {
        "state": engine.state.copy(),
        "context": engine.state.context,
        "head": engine.head,
        "peers": {
            peer_id: (p.epoch, p.ack, p.merged, p.pending) for peer_id, p in engine.peers.items()
        },
    }
