"""The anti-entropy engine: delta intervals with acks, BP and RR, and repair.

Sans-IO: the engine turns messages into messages and never touches a socket,
a clock or a thread. The transport, the Node and the tests drive it.

The protocol is delta-interval anti-entropy (Almeida et al. 2018,
Algorithm 2) with both optimizations of Enes et al. (ICDE 2019):

- Every state change enters a **delta buffer** under a sequence number. Each
  peer's **ack** says up to which seq it holds this node's state; an exchange
  sends it the join of the buffered deltas after its ack (a *delta interval*).
- **BP**: a buffered delta is never sent back to the peer it came from.
- **RR**: of a received delta, only the part that was new here is buffered
  and forwarded (``CRDT.unseen_part``).
- An interval of several small entries travels as **one joined delta** (a
  fresh join: the buffered entries are never changed), not as one framed
  delta per entry; a single entry, or large ones, go as encoded once.
- Every delta composed here (a join, a cut, a merged part) is checked to be
  **decodable** before it is buffered or sent (``codec.encode_decodable``): a
  receiver's decode refuses a cloud of many dots from few bytes, and a burst
  of writes that cancel out is a few bytes listing a dot each. One that is
  not goes as the deltas it was made of, each decodable already.
- **The response cut.** A response leaves out what the request it answers
  carried: the requester holds those deltas, so of the interval it gets only
  ``held.unseen_part(delta)``, where ``held`` is their join. On a mesh one
  delta often reaches both sides of an exchange at once, and would
  otherwise cross the edge both ways.
- **Repair.** A peer with no valid ack (new, restarted, or fallen behind the
  buffer's byte bound) is sent this node's causal context instead. If the
  peer has seen all of it, it acks at once; otherwise it asks for a full
  state, which travels as a snapshot cut into pieces no larger than the
  message bound and is merged in one step once complete. Every snapshot
  counts as a full-state fallback.

An exchange between peers that are in sync carries no state at all, only ids,
seqs and acks: well under 100 bytes each way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from agentsync.crdt.codec import MAX_ENCODED_BYTES, decode, encode, encode_decodable
from agentsync.crdt.group import NestedPath, WriteInPlace, write_in_place
from agentsync.crdt.hlc import ClockSkewError
from agentsync.crdt.ormap import ORMap
from agentsync.crdt.values import INT64_MAX, check_replica_id
from agentsync.errors import (
    AccessDeniedError,
    ClusterMismatchError,
    DecodeError,
    ForgedDotsError,
    ProtocolError,
)
from agentsync.sync.acl import Acl
from agentsync.sync.buffer import DeltaBuffer, Entry
from agentsync.sync.messages import (
    MAX_CLUSTER_CHARS,
    MAX_DELTAS,
    MAX_PIECES,
    Piece,
    SyncMessage,
    encode_message,
    pack_vector,
)
from agentsync.sync.pruning import Performed, Pruning, PruningConfig, encode_table

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
"""The largest message the engine composes (1 MiB)."""
DEFAULT_BUFFER_BYTES = 8 << 20
"""The delta buffer's byte bound (8 MiB)."""
MESSAGE_ROOM = 4096
"""Bytes of a message kept for everything but its deltas or piece."""
JOIN_MAX_AVERAGE_BYTES = 1024
"""An interval is sent as one joined delta when its entries average at most this size.

Each framed delta repeats a header, a replica table and a context, which is
most of a small one; joining also drops what later entries overwrote. But a
join decodes nothing and re-encodes everything, once per peer: for large
entries (a busy writer's rounds) that costs more CPU than the frames it saves.
"""

VECTOR_EVERY = 32
"""On a link that carries deltas, the version vector goes only every this many messages.

While writes flow, the vector changes with almost every message: sending it
each time would cost more than the deltas, and so would sending it in each
answer to a delta interval (the answer carries no deltas, but the merge
changed its sender's vector). Stability is wanted once things calm down, and
then a message carries it whenever it changed.
"""
RETELL_EVERY = 64
"""Messages after which news sent but not known to have arrived is sent again."""
MAX_PEERS = 4096
"""The most peers whose state an engine keeps: four times a membership's bound, so
honest peers are never dropped; past it (ids that anyone may claim, without a secret),
the peer heard from least recently is forgotten, and starts as a new one if it returns."""

Changed = frozenset[str]
"""The top-level names a merge changed."""


@dataclass(slots=True)
class SyncMetrics:
    """Counters the Node exports as Prometheus metrics (the transport adds bytes)."""

    rounds: int = 0
    """Exchanges this node completed, as initiator or as responder."""
    bytes_sent: int = 0
    bytes_received: int = 0
    errors: int = 0
    full_state_fallbacks: int = 0
    """Snapshots started because a peer had no usable ack."""
    forged: int = 0
    """Messages refused for claiming dots of this replica that it never issued."""
    denied: int = 0
    """Received deltas dropped whole for touching names their sender may not write."""


@dataclass(slots=True)
class _Outgoing:
    transfer: int
    seq: int
    data: bytes
    count: int
    size: int
    next: int = 0


@dataclass(slots=True)
class _Incoming:
    transfer: int
    seq: int
    count: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class _Told:
    """What a peer was told of one thing (the vector, the prune table), by its version.

    A version is sent once, and again after ``RETELL_EVERY`` messages unless
    a request that carried it was answered (the response proves the request
    arrived), as the Node retells members: a lost message delays news, and
    an idle exchange carries none.
    """

    confirmed: int | None = None
    sent: int | None = None
    offered: int | None = None
    quiet: int = 0
    """Messages composed for the peer since it was last sent (a busy link waits a while)."""

    def due(self, version: int) -> bool:
        if version == self.confirmed:
            return False
        return version != self.sent or self.quiet >= RETELL_EVERY

    def note(self, version: int, is_response: bool) -> None:
        self.quiet = 0
        self.sent = version
        if not is_response:
            self.offered = version

    def answered(self) -> None:
        if self.offered is not None:
            self.confirmed, self.offered = self.offered, None


@dataclass(slots=True)
class PeerState:
    """What this node knows of one peer, by the peer's node id."""

    epoch: int | None = None
    """The peer's epoch when last heard from; a new one means it restarted."""
    ack: int | None = None
    """The seq of this node's buffer up to which the peer holds its state."""
    pending: int | None = None
    """This node's seq when it sent the peer its context or a snapshot, until acked."""
    merged: int | None = None
    """The seq of the peer's buffer up to which this node holds its state."""
    replica: str | None = None
    """The replica id that issues the peer's dots (it has every one of them)."""
    knows_replica: bool = False
    """The peer's last message said it holds this node's replica id: leave it out."""
    rewind: bool = False
    """This node refused an interval of the peer's: its next message says so."""
    busy: bool = False
    """The peer's last message carried deltas: the answer to it is on a busy link."""
    refusals: int = 0
    """The highest count of refusals the peer's messages gave: a rewind with no more is stale."""
    sent: int | None = None
    """This node's seq up to which a response carried deltas the peer has not acked yet."""
    needs_snapshot: bool = False
    wants_snapshot: bool = False
    last_transfer: int = 0
    """The newest snapshot transfer from the peer seen so far (older pieces are stale)."""
    outgoing: _Outgoing | None = None
    incoming: _Incoming | None = None
    vector: dict[str, int] | None = None
    """The peer's version vector as it last reported it (revision 1.2), pruned ids left out."""
    told_vector: _Told = field(default_factory=_Told)
    told_table: _Told = field(default_factory=_Told)
    pruned_you: bool = False
    """The peer's replica was pruned here: every message to it says so, and nothing of it
    is merged, until it comes back as a new incarnation (a new epoch)."""
    observer: bool = False
    """The peer is read-only (revision 1.3): it may ack a pruning but never own one."""


_WRITER = PeerState()
"""What an unknown peer is taken for: a node that may own a pruning."""


@dataclass(frozen=True, slots=True)
class Session:
    """What a clean restart resumes of an engine (``agentsync.sync.session`` keeps it as bytes).

    The epoch, and the per-epoch counters peers compare across messages; the
    buffered deltas after ``floor`` as ``(delta, origin, data)``, one per seq
    in order; and each peer's state (only its epoch, ack, merged seq,
    replica, refusals and last transfer are kept).
    """

    epoch: int
    refusals: int
    last_transfer: int
    floor: int
    entries: tuple[tuple[ORMap, str | None, bytes], ...]
    peers: dict[str, PeerState]


class SyncEngine:
    """One node's replicas and its side of every exchange.

    ``state`` is an ORMap from top-level names to CRDTs; its replica id
    issues this node's dots and need not be ``node_id`` (a Node uses one per
    incarnation, so that a restart without its data never reissues a dot).
    Writes go to it
    directly (the Node's handles do that), and their deltas are handed to
    ``record_local``. ``request(peer)`` starts an exchange, ``on_request``
    answers one, and ``on_response`` finishes one; the last two return the
    names the merge changed. ``bp`` and ``rr`` switch off the ICDE
    optimizations, for the experiment that measures them.
    """

    def __init__(
        self,
        node_id: str,
        *,
        cluster: str = "default",
        state: ORMap | None = None,
        epoch: int | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        buffer_max_bytes: int = DEFAULT_BUFFER_BYTES,
        bp: bool = True,
        rr: bool = True,
        pruning: PruningConfig | None = None,
        read_only: bool = False,
        acl: Acl | None = None,
    ) -> None:
        self.node_id = check_replica_id(node_id)
        if type(cluster) is not str or not 0 < len(cluster) <= MAX_CLUSTER_CHARS:
            raise ValueError(f"cluster must be a str of 1 to {MAX_CLUSTER_CHARS} characters")
        if type(max_message_bytes) is not int or max_message_bytes < 4 * MESSAGE_ROOM:
            raise ValueError(f"max_message_bytes must be an int of at least {4 * MESSAGE_ROOM}")
        if type(buffer_max_bytes) is not int or buffer_max_bytes < 0:
            raise ValueError("buffer_max_bytes must be an int >= 0")
        self.cluster = cluster
        self.state = state if state is not None else ORMap(node_id)
        if self.state.is_delta:
            raise ValueError("state must be a replica, not a delta")
        self.epoch = epoch if epoch is not None else secrets.randbits(63)
        self.max_message_bytes = max_message_bytes
        self.bp = bp
        self.rr = rr
        self.read_only = read_only
        """Pull only: messages carry acks and news, never deltas, a context or a snapshot."""
        self.acl = acl
        """The names each peer may write here and is sent (None: every name, both ways)."""
        self.on_denied: Callable[[str, frozenset[str]], None] | None = None
        """Called with the sender and the forbidden names of each delta the ACL dropped."""
        self.metrics = SyncMetrics()
        self.pruning = Pruning(pruning)
        """The prune table, the replicas forgotten here and the Bloom filter of old ones."""
        self.pruned_out = False
        """A peer said this replica was pruned: take a new incarnation, merge nothing more."""
        self.limited = False
        """A peer limits what this observer reads: its state takes unsent writes as seen."""
        self.on_limited: Callable[[], None] | None = None
        """Called once, before anything of the first limited message is merged."""
        self._vector: dict[str, int] = {}
        """The state's version vector as of ``_vector_version`` (what peers are told)."""
        self._vector_version = 0
        self._vector_size: int | None = None
        """The packed size of ``_vector``, once a peer was due to be told it."""
        self._buffer = DeltaBuffer(buffer_max_bytes, self.state)
        self._peers: dict[str, PeerState] = {}
        self._last_transfer = 0
        self._snapshot: tuple[int, Callable[[object], bool] | None, bytes] | None = None
        """The last snapshot encoded: at which buffer head, for which readable names."""
        self._tracked = False
        self._held: ORMap | None = None
        """While a request is answered: the join of the deltas it carried."""
        self._refusals = 0
        """Intervals this node refused (every message says how many, for ``_take_ack``)."""
        self.on_merge: Callable[[ORMap], None] | None = None
        """Called with each part of a peer's state merged into ``state``, before it is
        buffered, and with each collapse delta this node writes as a pruning owner (the
        Node logs both to its store); an exception it raises fails the exchange, with
        the part merged."""
        if self.state.context:  # seq 0 is the empty state: acks of it must not count
            self._buffer.skip()

    # -- what the Node reads ----------------------------------------------------

    @property
    def head(self) -> int:
        """The seq of the newest buffered change."""
        return self._buffer.head

    @property
    def delta_buffer_bytes(self) -> int:
        """The bytes the delta buffer holds."""
        return self._buffer.bytes

    @property
    def peers(self) -> dict[str, PeerState]:
        """Every peer this node has exchanged with, by node id (a live view)."""
        return self._peers

    def wants_more(self, peer_id: str) -> bool:
        """True while a snapshot is under way with the peer: exchange again soon."""
        peer = self._peers.get(peer_id)
        return peer is not None and bool(
            peer.outgoing or peer.incoming or peer.needs_snapshot or peer.wants_snapshot
        )

    def catch_up(self, peer_id: str) -> dict[str, tuple[int, int]]:
        """The snapshot transfers under way with a peer, as (pieces done, pieces in all).

        ``"receiving"``: the pieces of the peer's state received so far;
        ``"sending"``: the piece of this node's state the peer asks for next.
        Empty when neither is under way (the usual case: deltas suffice).
        """
        peer = self._peers.get(peer_id)
        progress: dict[str, tuple[int, int]] = {}
        if peer is not None and peer.incoming is not None:
            progress["receiving"] = (len(peer.incoming.parts), peer.incoming.count)
        if peer is not None and peer.outgoing is not None:
            progress["sending"] = (peer.outgoing.next, peer.outgoing.count)
        return progress

    def forget(self, peer_id: str) -> None:
        """Drop everything known of a peer (it left for good)."""
        self._peers.pop(peer_id, None)
        self._collect()

    # -- bounded metadata (docs/crdts.md, "Pruning") -----------------------------

    def stable_vector(self, live: Iterable[str]) -> dict[str, int] | None:
        """The dots every live node has seen: the pointwise minimum of the version vectors.

        ``live`` names every peer node whose writes may still arrive. None
        while one of them has reported no vector, or reported one that is not
        within this replica's (its state is not merged here yet): then
        nothing is known to be stable.
        """
        mine = self.state._ctx._vv
        stable = dict(mine)
        for node_id in live:
            peer = self._peers.get(node_id)
            reported = peer.vector if peer is not None else None
            if reported is None:
                return None
            if any(mine.get(replica_id, 0) < n for replica_id, n in reported.items()):
                return None
            stable = {r: min(n, reported[r]) for r, n in stable.items() if r in reported}
        return stable

    def prune_stable(self, live: Iterable[str]) -> int:
        """Drop what the state keeps for updates every live node has seen; how many went."""
        stable = self.stable_vector(live)
        return self.state.prune_stable(stable) if stable else 0

    def prune_departed(
        self, now: float, members: Collection[str], alive: Collection[str] | None = None
    ) -> bool:
        """One prune step (``agentsync.sync.pruning``); True if what ``save`` keeps changed.

        ``now``: monotonic seconds; ``members``: the node ids of every member
        not removed (alive, suspect or dead); ``alive``: those alive (all of
        them if None), among which the lowest id starts pruning. An observer
        never starts one, and is passed over as its owner: the owner's
        collapse is a write that only a node sending deltas can spread.
        """
        pruning = self.pruning
        before = pruning.changes
        live = {self.state.replica_id}
        live.update(
            peer.replica
            for node_id, peer in self._peers.items()
            if peer.replica is not None and node_id in members
        )
        owners = [
            node_id for node_id in (members if alive is None else alive)
            if not self._peers.get(node_id, _WRITER).observer
        ]  # fmt: skip
        actions = pruning.step(
            now, me=self.node_id, mentioned=self.state.replica_ids(), live=live,
            members=members, alive=owners, tops=self.state._ctx._vv, may_own=not self.read_only,
        )  # fmt: skip
        for replica_id in actions.perform:
            self._perform(replica_id)
        self._forget_arrived()
        return pruning.changes != before

    def _perform(self, replica_id: str) -> None:
        """Collapse a departed replica into this one (its owner), spread that, and forget it."""
        state = self.state
        up_to = state._ctx._vv.get(replica_id, 0)
        delta = state.collapse(replica_id)
        if delta._ctx:
            if self.on_merge is not None:
                self.on_merge(delta)
            self.record_local(delta)
            self._buffer.seal()  # built off the state before the cleanup below
        top = state._ctx._vv.get(state.replica_id, 0)
        state.cleanup(replica_id, INT64_MAX)
        marker = Performed(self.node_id, state.replica_id, up_to, top)
        self.pruning.performed(replica_id, marker)
        self._forgot(replica_id)

    def _forget_arrived(self) -> None:
        """Forget each replica whose owner's collapse has arrived here."""
        state = self.state
        for replica_id, marker in list(self.pruning.pending()):
            if replica_id == state.replica_id:
                self.pruned_out = True  # this replica was pruned while it was away
                return
            if not marker.top or state._ctx.has(marker.owner_replica, marker.top):
                state.cleanup(replica_id, INT64_MAX)
                self.pruning.forgot(replica_id, marker.up_to)
                self._forgot(replica_id)

    def _forgot(self, replica_id: str) -> None:
        for peer in self._peers.values():
            if peer.vector is not None:
                peer.vector.pop(replica_id, None)

    # -- local writes -----------------------------------------------------------

    def record_local(self, delta: ORMap) -> None:
        """Note a delta of a write already applied to ``state``, so that it spreads.

        The engine takes the delta over: the caller must not use it again.
        """
        if self._tracked or self._buffer.log is not None:
            self._buffer.add_local(delta)
        else:
            self._buffer.skip()

    def step_local(self, path: NestedPath, in_place: WriteInPlace, arg: Any) -> bool:
        """Apply a local write to ``state`` in place and note it so that it spreads,
        making no delta, where the pending delta group already names ``path``
        (``LocalGroup.step``), or, with no peer and no log to feed, wherever the
        replica at ``path`` is held; False, with nothing written, where the caller
        is to make the delta and ``record_local`` it."""
        if self._tracked or self._buffer.log is not None:
            return self._buffer.step(path, in_place, arg)
        if write_in_place(self.state, path, in_place, arg):
            self._buffer.skip()  # as record_local does when no one needs the delta
            return True
        return False

    def log_writes(self) -> None:
        """Keep every local write from now on for ``logged``, even with no peer to send it to.

        A durable batch's record of its writes: the delta buffer's own group
        of pending writes, so a write is recorded once whether peers need it
        or not.
        """
        if self._buffer.log is None:  # already keeping them: go on
            self._buffer.log = []

    def logged(self) -> list[bytes]:
        """End ``log_writes``: the encoded deltas joining every local write since, to log.

        They may also hold earlier local writes that were pending; logging
        a write twice is harmless.
        """
        buffer = self._buffer
        if buffer.log is None:
            return []
        buffer.seal()
        blobs, buffer.log = buffer.log, None
        if not self._tracked:  # kept for the log alone: no peer needs them
            buffer.clear()
        return blobs

    # -- a session across a clean restart ---------------------------------------

    def session(self) -> Session:
        """What a clean restart would resume; seals the pending writes into the buffer."""
        buffer = self._buffer
        buffer.seal()
        entries = tuple((e.delta, e.origin, e.data) for e in buffer.since(buffer.floor))
        return Session(self.epoch, self._refusals, self._last_transfer, buffer.floor, entries,
                       dict(self._peers))  # fmt: skip

    def resume(self, session: Session) -> None:
        """Take a saved session, into an engine that has not exchanged yet, on the same state."""
        self.epoch = session.epoch
        self._refusals = session.refusals
        self._last_transfer = session.last_transfer
        self._buffer.restore(session.floor, session.entries)
        for node_id, peer in session.peers.items():
            self._keep(node_id, peer)
        self._collect()  # drops what no peer needs, and notes whether any is tracked

    # -- the exchange -----------------------------------------------------------

    def request(self, peer_id: str | None) -> SyncMessage:
        """The message that starts an exchange with a peer (None: its id is unknown)."""
        if peer_id is None:
            self._buffer.seal()
            head = self._buffer.head
            bare = SyncMessage(
                self.node_id, self.cluster, self.epoch, head, replica=self.state.replica_id,
                refusals=self._refusals, observer=self.read_only,
            )  # fmt: skip
            if self.read_only:  # it sends no state, not even a context
                return bare
            # Too many replicas to list: the reply names the peer; then it gets a snapshot.
            return self._with_context(bare) or bare
        check_replica_id(peer_id)
        peer = self._peers.setdefault(peer_id, PeerState())
        return self._compose(peer_id, peer, is_response=False)

    def on_request(self, message: SyncMessage) -> tuple[SyncMessage, Changed]:
        """Take a peer's request; return the response and the names that changed.

        Raises ClusterMismatchError, ProtocolError or DecodeError, with the
        replicated state unchanged, when the message cannot be accepted.
        """
        if message.is_response:
            raise ProtocolError("expected a request, got a response")
        try:
            changed = self._receive(message)
            reply = self._compose(message.sender, self._peers[message.sender], is_response=True)
        finally:
            self._held = None  # the response cut is for this response only
        return reply, changed

    def on_response(self, message: SyncMessage) -> Changed:
        """Take the response to this node's request; return the names that changed."""
        if not message.is_response:
            raise ProtocolError("expected a response, got a request")
        return self._receive(message)

    # -- receiving --------------------------------------------------------------

    def _receive(self, message: SyncMessage) -> Changed:
        try:
            return self._take(message)
        except ClockSkewError as exc:  # from a merge's check, before it changed anything
            self.metrics.errors += 1
            raise ProtocolError(str(exc)) from None
        except ForgedDotsError:
            self.metrics.errors += 1
            self.metrics.forged += 1
            raise
        except (ProtocolError, DecodeError):
            self.metrics.errors += 1
            raise

    def _take(self, message: SyncMessage) -> Changed:
        if message.cluster != self.cluster:
            raise ClusterMismatchError(
                f"message from cluster {message.cluster!r}; this node is in {self.cluster!r}"
            )
        if message.sender == self.node_id:
            raise ProtocolError(f"message from this node's own id {self.node_id!r}")
        sender = message.sender
        if not message.observer and self._reads(sender) is not None:
            raise AccessDeniedError(
                f"{sender} may read only some names here, so it must be a read-only observer "
                "(Node(read_only=True)); its message is refused"
            )
        if message.limited and not self.limited:
            if not self.read_only:
                raise AccessDeniedError(
                    f"{sender} limits what this node reads, but it is no observer: its "
                    "message is refused"
                )
            self.limited = True
            if self.on_limited is not None:
                self.on_limited()
        peer = self._peers.get(sender)
        if peer is None or peer.epoch not in (None, message.epoch):
            peer = PeerState()  # new, or restarted: it may hold less (kept only if accepted)
        peer.epoch = message.epoch
        peer.observer = message.observer
        if message.replica is not None:
            peer.replica = message.replica
        if message.pruned_you and message.ack is not None and message.ack[0] == self.epoch:
            self.pruned_out = True
        if self.pruned_out or self.pruning.is_pruned(peer.replica):
            peer.pruned_you = not self.pruned_out
            self._keep(sender, peer)
            self.metrics.rounds += 1
            return frozenset()  # a pruned replica came back, or this one is: never merged
        self._check_claims(message)
        self._take_news(peer, message)
        if message.piece is not None:
            changed = self._take_piece(sender, peer, message.piece)
        elif message.context is not None:
            changed = self._take_context(peer, message)
        else:
            changed = self._take_deltas(sender, peer, message)
        incoming = peer.incoming
        if incoming is not None and (peer.merged or 0) >= incoming.seq:
            # This node holds what the snapshot would bring (from another
            # peer, say), and the sender drops its side on seeing the ack.
            peer.incoming = None
        self._keep(sender, peer)
        peer.knows_replica = message.knows_replica
        peer.busy = bool(message.deltas)
        peer.sent = None  # what the peer acks now is what reached it
        self._take_ack(peer, message)
        self._take_want(peer, message.want)
        self.metrics.rounds += 1
        self._collect()
        if self.pruning.pruned or self.pruning.table:
            self._forget_arrived()
        return changed

    def _keep(self, sender: str, peer: PeerState) -> None:
        """Keep ``peer``'s state as heard from last; past the bound, forget the oldest."""
        peers = self._peers
        peers.pop(sender, None)
        peers[sender] = peer
        while len(peers) > MAX_PEERS:
            del peers[next(iter(peers))]

    def _check_claims(self, message: SyncMessage) -> None:
        """Refuse a message whose context, deltas or vector claim unissued dots of this replica.

        This replica issues its dots one after another and records each, so
        its own entry of the state's context is every dot it ever issued. A
        peer that claims more would make this replica's next writes look
        seen already (silently dropped everywhere): a forgery, or this id's
        later dots were lost (a data directory restored from an old backup).
        """
        contexts = [delta._ctx for delta in message.deltas]
        if message.context is not None:
            contexts.append(message.context)
        own = self.state.replica_id
        claimed = max((ctx.max_counter(own) for ctx in contexts), default=0)
        if message.vector is not None:
            claimed = max(claimed, message.vector.get(own, 0))
        self._check_claimed(message.sender, claimed)

    def _check_claimed(self, sender: str, claimed: int) -> None:
        own = self.state.replica_id
        # Every dot this replica issued is in its vector entry (``next_dot``), and none
        # beyond is ever merged (this check), so its cloud, huge in a storm, need not be read.
        issued = self.state._ctx._vv.get(own, 0)
        if claimed > issued:
            raise ForgedDotsError(sender, own, claimed, issued)

    def _take_news(self, peer: PeerState, message: SyncMessage) -> None:
        """Take a peer's reported vector and prune table; a response confirms what we told."""
        if message.is_response:
            peer.told_vector.answered()
            peer.told_table.answered()
        if message.vector is not None:
            pruning = self.pruning
            reported = peer.vector if peer.vector is not None else {}
            for replica_id, n in message.vector.items():
                if n > reported.get(replica_id, 0) and not pruning.is_pruned(replica_id):
                    reported[replica_id] = n  # a late message's lower vector is old news
            peer.vector = reported
        if message.prune:
            self.pruning.merge(dict(message.prune))

    def _take_deltas(self, sender: str, peer: PeerState, message: SyncMessage) -> Changed:
        if message.is_response and (message.ack is None or message.ack[0] != self.epoch):
            # The answer to a request of an earlier incarnation of this node
            # (it restarted since): it was cut by what that one held.
            return frozenset()
        unknown = peer.replica is None and (self.pruning.pruned or self.pruning.bloom.count)
        if message.base > (peer.merged or 0) or (unknown and message.deltas):
            # The interval starts after state of the sender this node does not
            # hold (an interval before it was lost, or this node restarted).
            # Merging it could leave dots in the context whose effects are
            # missing, so drop it; the reply tells the sender to rewind. (So
            # too while its replica id is unknown here and may be a pruned
            # one: the reply asks for the id.)
            peer.rewind = True
            self._refusals += 1
            return frozenset()
        changed: Changed = frozenset()
        if message.deltas:
            held = _join_checked(message.deltas)
            kept = self._permitted(sender, message.deltas)
            if kept:
                incoming = held if len(kept) == len(message.deltas) else _join_checked(kept)
                changed = self._apply(incoming, sender, kept)
            if not message.is_response:
                self._held = held  # the requester holds it all: cut the response by it
        _raise_merged(peer, message.seq)  # dropped deltas too: they are never applied here
        return changed

    def _permitted(self, sender: str, deltas: tuple[ORMap, ...]) -> tuple[ORMap, ...]:
        """The deltas the ACL lets ``sender`` write here; the others are dropped whole.

        Whole, context and all: the names share one context whose removal
        dots are tied to no name, so a delta cut to its permitted names
        could claim dots it never applied, or lose removals.
        """
        if self.acl is None:
            return deltas
        kept = []
        for delta in deltas:
            forbidden = self.acl.forbidden(sender, delta)
            if not forbidden:
                kept.append(delta)
                continue
            self.metrics.denied += 1
            if self.on_denied is not None:
                self.on_denied(sender, forbidden)
        return tuple(kept)

    def _take_context(self, peer: PeerState, message: SyncMessage) -> Changed:
        theirs = message.context
        assert theirs is not None
        if self.pruning.pruned:  # forgotten here, and never merged again
            theirs = theirs.copy()
            for replica_id in self.pruning.pruned:
                theirs._forget(replica_id, INT64_MAX)
        mine = self.state._ctx
        if theirs <= mine:
            _raise_merged(peer, message.seq)
        else:
            peer.incoming = None  # a context says it sends no snapshot now
            peer.wants_snapshot = True
        self._buffer.seal()
        if mine <= theirs:
            self._raise_ack(peer, self._buffer.head)
        elif peer.ack is None or peer.ack < self._buffer.floor:
            peer.needs_snapshot = True
        return frozenset()

    def _take_piece(self, sender: str, peer: PeerState, piece: Piece) -> Changed:
        if piece.transfer < peer.last_transfer:
            return frozenset()  # a late piece of an older transfer
        if piece.transfer > peer.last_transfer:  # a new transfer, whatever piece comes first
            peer.last_transfer = piece.transfer
            peer.incoming = _Incoming(piece.transfer, piece.seq, piece.count)
            peer.wants_snapshot = False
        incoming = peer.incoming
        if incoming is None:
            return frozenset()  # a late piece of a transfer that is over
        expected = (len(incoming.parts), incoming.count, incoming.seq)
        if (piece.index, piece.count, piece.seq) != expected:
            return frozenset()  # a duplicate or out of order: the want asks again
        incoming.size += len(piece.data)
        if incoming.size > MAX_ENCODED_BYTES:
            peer.incoming = None
            raise ProtocolError(f"a snapshot larger than {MAX_ENCODED_BYTES} bytes")
        incoming.parts.append(piece.data)
        if len(incoming.parts) < incoming.count:
            return frozenset()
        peer.incoming = None
        try:
            full = decode(b"".join(incoming.parts), ORMap)
            if full.is_delta:
                raise ProtocolError("a snapshot must be a full state, not a delta")
            self._check_claimed(sender, full._ctx.max_counter(self.state.replica_id))
        except (DecodeError, ProtocolError):
            peer.wants_snapshot = True  # ask for another one
            raise
        changed = self._apply(full, sender) if self._permitted(sender, (full,)) else frozenset()
        _raise_merged(peer, incoming.seq)
        return changed

    def _apply(
        self, incoming: ORMap, origin: str, pieces: tuple[ORMap, ...] | None = None
    ) -> Changed:
        """Merge what ``incoming`` adds, buffer it for the other peers, and say what changed.

        ``pieces``: the deltas ``incoming`` joins (None: it came whole).
        """
        for name in incoming._fields:
            if type(name) is not str:
                raise ProtocolError(f"top-level names must be str, not {type(name).__name__}")
        if self.pruning.pruned:  # what a forgotten replica wrote is never merged again
            cleaned = incoming.cleaned(self.pruning.forget_bounds())
            if cleaned is None:
                return frozenset()
            incoming = cleaned
        part = self.state.unseen_part(incoming)
        if part is None:
            return frozenset()
        changed = _names_changed_by(self.state, part)
        self.state.merge(part)  # ClockSkewError: see _receive
        if self.on_merge is not None:
            self.on_merge(part)
        if self._tracked and not self.read_only:  # an observer forwards nothing
            for forwarded, data in self._forwarded(part, incoming, pieces):
                self._buffer.add(forwarded, origin, data)
        else:
            self._buffer.skip()
        return changed

    def _forwarded(
        self, part: ORMap, incoming: ORMap, pieces: tuple[ORMap, ...] | None
    ) -> list[tuple[ORMap, bytes]]:
        """What to buffer of a merge, encoded: the part new here (RR), if a peer can decode it.

        A part, or the join of what arrived, can list many more dots than its
        few bytes justify to a receiver's decode: the join here of an
        interval of several deltas of a peer's burst of writes that cancel
        out. Then each delta that arrived is forwarded on its own, which is
        safe (it is what ``rr=False`` does) and decodable (each was decoded
        here from the bytes it encodes to), as is a snapshot that arrived.
        """
        whole = part if self.rr else incoming
        data = encode_decodable(whole)
        if data is not None:
            return [(whole, data)]
        if pieces is None:
            return [(incoming, encode(incoming))]
        if self.pruning.pruned:  # cleaned like ``incoming``, here where they are needed
            bounds = self.pruning.forget_bounds()
            pieces = tuple(p for p in (d.cleaned(bounds) for d in pieces) if p is not None)
        return [(delta, encode(delta)) for delta in pieces]

    def _take_ack(self, peer: PeerState, message: SyncMessage) -> None:
        """Raise the peer's ack; lower it only when the peer says it refused an interval.

        A late or duplicated message carries an older, lower ack, which must
        not count. But a peer that refused an interval (one before it was
        lost, or its record of this node was reset by a stale message of an
        old incarnation of this node) refuses every interval cut against the
        higher ack; it says so with ``rewind``. Every message says how many
        intervals its sender has refused, and that count only grows, so a
        rewind is news only when it is higher than any count heard before:
        a duplicate of it, or a rewind that arrives after a later message of
        the peer, is as stale as any lower ack. (A revision 1.0 peer gives no
        count: its rewinds are believed.)
        """
        ack = message.ack
        refusals = message.refusals
        if ack is not None and ack[0] == self.epoch and ack[1] <= self._buffer.head:
            news = refusals is None or refusals > peer.refusals
            if message.rewind and news and peer.ack is not None and ack[1] < peer.ack:
                peer.ack = ack[1]
            self._raise_ack(peer, ack[1])
        if refusals is not None and refusals > peer.refusals:
            peer.refusals = refusals

    def _raise_ack(self, peer: PeerState, seq: int) -> None:
        if peer.ack is None or seq > peer.ack:
            peer.ack = seq
        if peer.pending is not None and seq >= peer.pending:
            peer.pending = None
        if peer.outgoing is not None and seq >= peer.outgoing.seq:
            peer.outgoing = None

    def _take_want(self, peer: PeerState, want: tuple[int, int] | None) -> None:
        if want is None:
            return
        transfer, index = want
        outgoing = peer.outgoing
        if transfer == 0:  # a new snapshot, please; ``index`` is the last transfer it saw
            self._last_transfer = max(self._last_transfer, index)  # the next must be newer
            if outgoing is None:
                peer.needs_snapshot = True
            elif outgoing.transfer <= index:  # it gave up on the current one
                peer.outgoing = None
                peer.needs_snapshot = True
        elif outgoing is not None and transfer == outgoing.transfer and index < outgoing.count:
            outgoing.next = index

    # -- composing --------------------------------------------------------------

    def _compose(self, peer_id: str, peer: PeerState, *, is_response: bool) -> SyncMessage:
        buffer = self._buffer
        buffer.seal()
        ack = None
        if peer.epoch is not None:  # 0: none of it yet, which also names its epoch
            ack = (peer.epoch, peer.merged or 0)
        want = None
        if peer.incoming is not None:
            want = (peer.incoming.transfer, len(peer.incoming.parts))
        elif peer.wants_snapshot:
            want = (0, peer.last_transfer)
        # Nothing but the flag for a pruned replica: it must start anew.
        news, extra = ({}, 0) if peer.pruned_you else self._news(peer, is_response)
        readable = self._reads(peer_id)
        message = SyncMessage(
            self.node_id, self.cluster, self.epoch, buffer.head, ack=ack, want=want,
            is_response=is_response, rewind=peer.rewind, knows_replica=peer.replica is not None,
            replica=None if peer.knows_replica else self.state.replica_id,
            refusals=self._refusals, pruned_you=peer.pruned_you, observer=self.read_only,
            limited=readable is not None, **news,
        )  # fmt: skip
        peer.rewind = False
        if peer.pruned_you:
            return message
        # A peer that may read only some names is sent state once it said it is an observer.
        mute = self.read_only or (readable is not None and not peer.observer)
        try:
            filled = message if mute else self._fill(peer_id, peer, message, readable, extra)
        finally:
            self._collect()
        told = peer.told_vector
        told.quiet += 1
        peer.told_table.quiet += 1
        if filled.piece is not None:
            return replace(filled, vector=None, prune=None)  # a piece's room is all taken
        busy = filled.deltas or (is_response and peer.busy)
        if filled.vector is not None and busy and told.quiet < VECTOR_EVERY:
            filled = replace(filled, vector=None)  # the vector of a busy link goes now and then
        if filled.vector is not None:
            told.note(self._vector_version, is_response)
        if filled.prune is not None:
            peer.told_table.note(self.pruning.changes, is_response)
        return filled

    def _news(self, peer: PeerState, is_response: bool) -> tuple[dict[str, Any], int]:
        """This node's vector and prune table, if the peer was not told them yet; their size.

        Both together stay within a quarter of a message (what does not fit
        waits): an idle exchange carries neither.
        """
        news: dict[str, Any] = {}
        extra = 0
        room = self.max_message_bytes // 4
        vector = self._vector
        if self.state._ctx._vv != vector:
            vector = self._vector = dict(self.state._ctx._vv)
            self._vector_version += 1
            self._vector_size = None
        if vector and peer.told_vector.due(self._vector_version):
            if self._vector_size is None:  # once per version, whichever peers are told it
                self._vector_size = len(pack_vector(vector))
            if self._vector_size <= room:
                news["vector"] = vector  # replaced at the next change, never changed
                extra += self._vector_size
        pruning = self.pruning
        if pruning.table and peer.told_table.due(pruning.changes):
            entries = pruning.entries()
            size = len(encode_table(entries))
            if extra + size <= room:
                news["prune"] = entries
                extra += size
        return news, extra

    def _fill(
        self,
        peer_id: str,
        peer: PeerState,
        message: SyncMessage,
        readable: Callable[[object], bool] | None,
        extra: int = 0,
    ) -> SyncMessage:
        """Add what the peer lacks: a delta interval, the context, or a snapshot piece.

        ``readable``: the names the peer is sent (None: all); ``extra``: the
        bytes the message's vector and prune table take.
        """
        buffer = self._buffer
        if peer.outgoing is None and not peer.needs_snapshot:
            if peer.ack is not None and peer.ack >= buffer.floor:
                start = peer.ack if peer.sent is None else max(peer.ack, peer.sent)
                interval = self._interval(peer_id, start, readable, extra)
                if interval is not None:
                    if message.is_response:  # it arrives unseen: do not send it again
                        peer.sent = interval["seq"]  # type: ignore[assignment]
                    return _with(message, base=start, **interval)
                peer.needs_snapshot = True  # one buffered delta is larger than a message
            else:
                with_context = self._with_context(message)
                if with_context is not None:
                    if peer.pending is None:
                        peer.pending = buffer.head
                    return with_context
                peer.needs_snapshot = True  # too many replicas to list: send it all
        return _with(message, **self._piece(peer, readable))

    def _reads(self, peer_id: str) -> Callable[[object], bool] | None:
        """Which top-level names ``peer_id`` is sent; None: every name."""
        return None if self.acl is None else self.acl.reads(peer_id)

    def _with_context(self, message: SyncMessage) -> SyncMessage | None:
        """``message`` with this node's context, or None if that outgrows the message bound."""
        with_context = _with(message, context=self.state.context)
        if len(encode_message(with_context)) > self.max_message_bytes:
            return None
        return with_context

    def _interval(
        self, peer_id: str, ack: int, readable: Callable[[object], bool] | None, extra: int = 0
    ) -> dict[str, object] | None:
        """The buffered deltas after ``ack`` that fit one message, or None if one cannot."""
        budget = self.max_message_bytes - MESSAGE_ROOM - extra
        room = budget
        chosen: list[Entry] = []
        covered = ack
        own = self._peers[peer_id].replica
        for entry in self._buffer.since(ack):
            if self.bp and (entry.origin == peer_id or (own and entry.writer == own)):
                covered = entry.seq  # it came from the peer, or holds only the peer's writes
                continue
            if len(chosen) == MAX_DELTAS or len(entry.data) > room:
                if not chosen:
                    return None
                break
            room -= len(entry.data)
            chosen.append(entry)
            covered = entry.seq
        deltas, encoded = self._wire_form(chosen, budget - room, budget, readable)
        return {"seq": covered, "deltas": deltas, "encoded_deltas": encoded}

    def _wire_form(
        self,
        chosen: list[Entry],
        size: int,
        budget: int,
        readable: Callable[[object], bool] | None = None,
    ) -> tuple[tuple[ORMap, ...], tuple[bytes, ...]]:
        """The chosen entries (``size`` bytes encoded) as sent: joined if small, cut if answering.

        Never more than ``budget`` bytes: a join or a cut can encode larger
        than its parts (a scattered context), and then the entries go as they
        are buffered. With ``readable``, each holds only the names it
        accepts (under its whole context), which only shrinks it.
        """
        sent: list[tuple[ORMap, bytes | None]] = [(e.delta, e.data) for e in chosen]
        if (
            len(chosen) > 1
            and size <= JOIN_MAX_AVERAGE_BYTES * len(chosen)
            and all(e.delta.is_delta for e in chosen)  # _absorb joins deltas (a full state: rare)
        ):
            sent = [(_joined([e.delta for e in chosen]), None)]
        held = self._held
        if held is not None:
            ids = held._ctx._replica_ids()
            cut: list[tuple[ORMap, bytes | None]] = []
            for delta, data in sent:
                if ids.isdisjoint(delta._ctx._replica_ids()):
                    cut.append((delta, data))  # it shares no dot with what the requester sent
                    continue
                part = held.unseen_part(delta)
                if part is not None:
                    cut.append((part, None))
            sent = cut
        if readable is not None:
            sent = [(delta.only(readable), None) for delta, _ in sent]
        encoded = [encode_decodable(d) if data is None else data for d, data in sent]
        if None in encoded or sum(len(data) for data in encoded if data) > budget:
            if readable is None:
                return tuple(e.delta for e in chosen), tuple(e.data for e in chosen)
            parts = tuple(e.delta.only(readable) for e in chosen)
            return parts, tuple(encode(part) for part in parts)
        return tuple(d for d, _ in sent), tuple(data for data in encoded if data is not None)

    def _piece(
        self, peer: PeerState, readable: Callable[[object], bool] | None
    ) -> dict[str, object]:
        outgoing = peer.outgoing
        if outgoing is None:
            outgoing = peer.outgoing = self._start_snapshot(peer, readable)
        at = outgoing.next * outgoing.size
        return {
            "seq": outgoing.seq,
            "piece": Piece(
                outgoing.transfer, outgoing.seq, outgoing.next, outgoing.count,
                outgoing.data[at : at + outgoing.size],
            ),
        }  # fmt: skip

    def _start_snapshot(
        self, peer: PeerState, readable: Callable[[object], bool] | None
    ) -> _Outgoing:
        head = self._buffer.head
        if self._snapshot is None or self._snapshot[:2] != (head, readable):
            state = self.state if readable is None else self.state.only(readable)
            self._snapshot = (head, readable, encode(state))
        data = self._snapshot[2]
        size = self.max_message_bytes - MESSAGE_ROOM
        pieces = -(-len(data) // size)
        if pieces > MAX_PIECES:  # pragma: no cover  # 64 GiB at the smallest message bound
            raise ProtocolError("the state is too large to send as a snapshot")
        peer.needs_snapshot = False
        if peer.pending is None or peer.pending > head:
            peer.pending = head
        self.metrics.full_state_fallbacks += 1
        self._last_transfer += 1
        return _Outgoing(self._last_transfer, head, data, pieces, size)

    # -- the buffer's floor -------------------------------------------------------

    def _collect(self) -> None:
        """Release buffered deltas that every tracked peer holds; note if any peer is tracked."""
        buffer = self._buffer
        floor = None
        for peer in self._peers.values():
            if peer.pending is not None and peer.pending < buffer.floor:
                peer.pending = None
            for seq in (peer.ack, peer.pending):
                if seq is not None and seq >= buffer.floor and (floor is None or seq < floor):
                    floor = seq
        self._tracked = floor is not None
        if floor is None:
            buffer.clear()
        else:
            buffer.release(floor)


def _joined(deltas: list[ORMap]) -> ORMap:
    """A fresh join of deltas merged here already; the deltas stay as they are.

    ``merge`` without its checks (``_absorb``): every delta was merged here
    already, so its timestamps were checked then.
    """
    group = deltas[0].copy()
    for delta in deltas[1:]:
        group._absorb(delta)
    return group


def _join_checked(deltas: tuple[ORMap, ...]) -> ORMap:
    """The join of received deltas, checked as merged (ClockSkewError: see ``_receive``)."""
    joined = deltas[0]
    if len(deltas) > 1:
        joined = joined.copy()
        for delta in deltas[1:]:
            joined.merge(delta)
    return joined


def _raise_merged(peer: PeerState, seq: int) -> None:
    """This node now holds the peer's state up to ``seq`` (a stale message may say less)."""
    if peer.merged is None or seq > peer.merged:
        peer.merged = seq


def _names_changed_by(state: ORMap, part: ORMap) -> Changed:
    """The top-level names that merging ``part`` into ``state`` may change.

    Every name ``part`` holds; and, when ``part`` is a whole state (which
    names none of the keys it removed), every name here holding a dot that
    ``part`` has seen but does not hold: the merge drops those entries, and
    may empty the name. Found before the merge, while those entries are here.
    """
    names: set[str] = set(part._fields)  # type: ignore[arg-type]  # checked str by _apply
    if not part._delta:
        seen = part._ctx.has
        for name, fields in state._fields.items():
            if name not in names and any(
                seen(*dot) for replica in fields.values() for dot in replica._dots()
            ):
                names.add(name)  # type: ignore[arg-type]  # the state's names are str
    return frozenset(names)


def _with(message: SyncMessage, **changes: object) -> SyncMessage:
    return replace(message, **changes)  # type: ignore[arg-type]
