"""The Node: what users hold. It wires the replicas, the protocol and the network.

A Node owns one ``SyncEngine`` (the replicas and the protocol state), one
``SyncServer`` (peers exchange with it) and one ``SyncClient`` (it exchanges
with peers). Every ``gossip_interval`` it runs a push-pull exchange with
``fanout`` random peers; a local write also wakes an eager push, rate-limited,
so that a write reaches the others in about one round trip.

All replica access goes through one lock, so handles work from any thread;
network I/O never holds it. A Node started with ``start_background`` runs its
event loop in a daemon thread, for agent code that is not async.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import functools
import logging
import math
import os
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType, TracebackType
from typing import Any

from agentsync import __version__
from agentsync.crdt import CRDT, ORMap
from agentsync.crdt.group import WriteInPlace
from agentsync.crdt.values import INT64_MAX, MAX_REPLICA_ID_CHARS
from agentsync.discovery.mdns import Discovered, MdnsDiscovery
from agentsync.discovery.membership import (
    Member,
    Membership,
    MembershipConfig,
    MemberState,
    Source,
    Transition,
)
from agentsync.errors import (
    DecodeError,
    ForgedDotsError,
    ImpersonationError,
    PeerUnavailableError,
    ProtocolError,
    ReadOnlyError,
)
from agentsync.handles import Container, H, Handle, Path
from agentsync.metrics import exposition
from agentsync.security import Channel, Keyring, Secret
from agentsync.status import report
from agentsync.store import DURABILITIES, Durability, Store, Stored, StoreError
from agentsync.sync import PROTOCOL_VERSION, SyncEngine, decode_message, encode_message, session
from agentsync.sync.acl import ANY_PEER, Acl
from agentsync.sync.engine import SyncMetrics
from agentsync.sync.messages import MAX_MEMBERS
from agentsync.sync.pruning import Performed, PruningConfig
from agentsync.transport.client import SyncClient
from agentsync.transport.server import SyncServer
from agentsync.transport.tls import TLSConfig
from agentsync.transport.urls import at_address, is_loopback, is_wildcard, normalize_url

log = logging.getLogger("agentsync.node")

MAX_NAME_CHARS = 256
"""The longest top-level name."""
MAX_NODE_ID_CHARS = MAX_REPLICA_ID_CHARS - 17
"""The longest node id: it leaves room for the incarnation suffix of the replica id."""
CHANGE_QUEUE_SIZE = 4096
"""How far an ``async for change in node.changes()`` consumer may fall behind."""
SNAPSHOT_ROUNDS = 4096
"""The most back-to-back exchanges one peer gets while a snapshot is under way."""
EXCHANGE_TIMEOUT_S = 1.0
"""How long one exchange may take by default: a LAN answers in milliseconds, and a
peer cut off must fail fast for the failure detector's bound (``docs/membership.md``).
A slow or distant link needs more (``Node(exchange_timeout=...)``)."""
MAX_EXCHANGE_TIMEOUT_S = 600.0
PROBES_PER_TICK = 16
"""At most this many probes start at once (after a flood of learned members)."""
PROBES_IN_FLIGHT = 64
"""At most this many probes run at once (each ends within the exchange timeout)."""
COMPACT_MIN_BYTES = 1 << 20
"""The store's log is folded into a new snapshot once it is this big and outgrew it."""
MAX_ECHOES = 16
"""Requests this node sent to itself, remembered until the requester sees the refusal."""
REFUSALS = frozenset({401, 403, 409})
"""Answers that a setting must fix (key, ACL, cluster): logged at WARNING, once a peer."""
MAX_REFUSED_LOGGED = 1024
"""The most peers whose refusal is remembered as logged (then all are forgotten)."""
RETELL_S = 30.0
"""How often every peer is told of every member again (news lost in transit)."""
TOLD_PEERS = 4096
"""The most peers whose peer-exchange cursor is kept (a flood of ids cycles them)."""


@dataclass(frozen=True, slots=True)
class Change:
    """What one write or merge changed: the top-level names, and where it came from."""

    names: frozenset[str]
    local: bool


class _Done:
    """An awaitable that is already finished (``stop()`` of a background node)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover  # makes this a generator


class Node(Container):
    """One agent's replicas, served to and synced with its peers.

    ``node_id`` names the node to its peers; without one, a random id is
    made. ``peers`` are base URLs of other nodes (``http://host:port``).
    ``seeds`` are URLs of nodes to start from, and ``discovery`` finds nodes
    on the LAN over mDNS. The node learns the members its peers name (peer
    exchange), and the nodes that introduce themselves to it, unless it was
    given only ``peers``: then it keeps exactly those. Every member is
    judged alive, suspect or dead (``members()``), with the timings of
    ``membership`` (``agentsync.discovery.MembershipConfig``: when a silent
    peer is suspect and dead, how dead ones are retried, and when they are
    forgotten; the defaults detect a silent peer within 5 s).
    ``exchange_timeout`` bounds one exchange, connecting (half of it at most)
    included: the default 1 s suits a LAN; over a slow or distant link give
    it a round trip or three plus the time a full message (1 MiB) takes to
    send, or a catch-up crawls or never gets through
    (``docs/guides/deploying.md``).
    ``data_dir`` keeps the node's state in SQLite there (``docs/storage.md``).
    ``pruning`` (``agentsync.sync.PruningConfig``) says when the metadata of
    replicas that left for good is pruned: a replica is pruned once its
    node was removed (``membership.remove_after``) and it then looked
    departed for ``prune_after``, 24 h by default. A node away longer than
    that is refused when it returns and starts anew from its peers' state,
    losing its writes no peer had: take ``prune_after`` above the longest
    time an agent stays offline (``docs/crdts.md``, "Pruning").
    ``secret`` (bytes, at least 16, or a str passphrase) is the cluster's
    shared secret: every exchange is then sealed, authenticated and
    replay-checked, state and metrics need the key's bearer token, and mDNS
    takes only peers of the same key (``docs/security.md``); rotate it at
    runtime with ``node.keyring`` (install, use, remove).
    ``read_only`` makes an observer: it pulls its peers' state but never
    sends a delta, and a write raises ReadOnlyError. ``acl`` says which
    top-level names each peer may write here and is sent
    (``agentsync.sync.acl``): ``{"peer-id-or-*": {"read": [...], "write":
    ["prefix*", "name"]}}``; a delta touching another name is dropped,
    counted and logged; a peer limited in reading must be an observer, and
    ``GET /v1/state`` and ``/v1/status`` show what ``"*"`` may read
    (``docs/security.md``, "Access control").
    ``tls`` (``agentsync.transport.tls.TLSConfig``) serves https and reaches
    peers with its CAs, certificate and pins; such a node sends nothing over
    plain http: its peers and seeds need https URLs, and http ones it learns
    are skipped (``docs/security.md``, "TLS"). With its ``bind_node_ids``,
    the certificate names the node's id (``node_id`` defaults to it, and
    another one is a ValueError), and a peer speaks only as the id its
    certificate names (``docs/security.md``, "Binding node ids").
    """

    def __init__(  # noqa: PLR0915  # it wires every part; each step is one line
        self,
        node_id: str | None = None,
        *,
        cluster: str = "default",
        host: str = "127.0.0.1",
        port: int = 0,
        peers: Iterable[str] = (),
        gossip_interval: float = 0.2,
        fanout: int = 3,
        data_dir: str | os.PathLike[str] | None = None,
        discovery: bool = False,
        seeds: Iterable[str] = (),
        membership: MembershipConfig | None = None,
        durability: Durability = "full",
        pruning: PruningConfig | None = None,
        secret: Secret | None = None,
        read_only: bool = False,
        acl: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
        tls: TLSConfig | None = None,
        exchange_timeout: float = EXCHANGE_TIMEOUT_S,
    ) -> None:
        self.keyring = Keyring(secret, cluster=cluster) if secret is not None else None
        """The cluster's keys when it has a secret (rotate them here), else None."""
        if tls is not None and not isinstance(tls, TLSConfig):
            raise TypeError("tls must be an agentsync.transport.tls.TLSConfig")
        self._ssl = (tls.server_context(), tls.client_context()) if tls is not None else None
        """The server's and the client's SSLContext with TLS, else None."""
        certified = tls.certified_id() if tls is not None else None
        self._bind_node_ids = certified is not None
        """Whether peers speak only as the node id their certificates name."""
        if certified is not None and node_id not in (None, certified):
            raise ValueError(
                f"this node's TLS certificate names node id {certified!r}, not {node_id!r}: "
                "with bind_node_ids, a node's id is the one its certificate names"
            )
        node_id = certified or node_id
        _check_arguments(
            "node" if node_id is None else node_id, host=host, port=port,
            gossip_interval=gossip_interval, fanout=fanout, discovery=discovery,
            durability=durability, pruning=pruning, read_only=read_only,
            exchange_timeout=exchange_timeout,
        )  # fmt: skip
        self.exchange_timeout = float(exchange_timeout)
        """The longest one exchange may take, connecting included (half of it at most)."""
        self._pruning = pruning or PruningConfig()
        self.read_only = read_only
        self._acl = Acl(acl) if acl is not None else None
        if isinstance(peers, str) or isinstance(seeds, str):
            raise TypeError("peers and seeds must be iterables of URLs, not one str")
        peers = list(peers)
        seed_urls = [normalize_url(url) for url in seeds]
        for url in [*peers, *seed_urls]:  # before the store is opened
            self._check_scheme(normalize_url(url))
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.durability: Durability = durability
        self._store, stored = _open_store(self.data_dir, durability, node_id, cluster, read_only)
        node_id = stored.node_id if stored is not None else node_id
        node_id = node_id or f"node-{secrets.token_hex(4)}"
        self.node_id = node_id
        self._channel = Channel(self.keyring, node_id) if self.keyring is not None else None
        self._auth_failures = 0
        self.cluster = cluster
        self.host = host
        self.port = port
        self.gossip_interval = float(gossip_interval)
        self.fanout = fanout
        self._engine = self._new_engine(self._resume(stored))
        self._engine.limited = stored is not None and stored.limited
        self._resume_pruning(stored)
        self._resume_session(stored)
        self._lock = threading.RLock()
        self._told: dict[str, int] = {}  # peer -> its cursor in the membership's news
        self._echoes: builtins.set[int] = builtins.set()  # hashes of requests sent to itself
        self._refused_by: dict[str, int] = {}
        """Peer URL -> the refusal status (401, 403, 409) last logged; forgotten on success."""
        self._retell_at = 0.0
        self._inflight: dict[str, asyncio.Event] = {}  # url -> set when its exchange ends
        self._probes: builtins.set[asyncio.Task[bool]] = builtins.set()
        self._subscribers: list[Callable[[Change], None]] = []
        self._queues: builtins.set[asyncio.Queue[Change]] = builtins.set()
        self._batch_depth = 0
        self._batch_names: builtins.set[str] = builtins.set()
        self._rng = random.Random()
        self.discovery = discovery
        self._membership = Membership(membership, rng=self._rng)  # TypeError if not a config
        self._learns = discovery or bool(seed_urls) or not peers
        """Whether peers named in messages become members (all but a fixed ``peers`` list)."""
        self._server: SyncServer | None = None
        self._client: SyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._push: asyncio.Event | None = None
        self._started_at = 0.0
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._mdns: MdnsDiscovery | None = None
        self._add_first_members(peers, seed_urls, stored)
        self._members_saved: list[tuple[str, str | None, str]] = []

    def _add_first_members(self, peers: list[str], seeds: list[str], stored: Stored | None) -> None:
        """The given peers and seeds, and the members a stored node knew (if it learns)."""
        for url in peers:
            self.add_peer(url)
        for url in seeds:
            self._add_member(url, "seed")
        if self._learns and stored is not None:  # the peers it knew, tried first again
            for url, member_id, _ in stored.members:  # learned now: forgotten if they stay dead
                self._add_member(url, "exchange", member_id)

    def _resume(self, stored: Stored | None) -> ORMap:
        """The replica to start from: the stored one, or an empty one; its id saved.

        The stored replica id is kept after a clean stop. After a crash a new
        incarnation writes on: a write that reached a peer but not the disk
        (a batch cut short, or a commit lost to a power cut with
        ``durability="normal"``) must never have its dot issued twice.
        """
        incarnation = self._incarnation()
        if stored is not None and stored.clean:
            return stored.state
        state = ORMap(incarnation)
        if stored is not None:
            state.merge(stored.state)
        if self._store is not None:
            self._store.save_identity(self.node_id, self.cluster, incarnation)
        return state

    def _incarnation(self) -> str:
        """A new replica id for this node: its writes' dots are never issued twice."""
        return f"{self.node_id}.{secrets.token_hex(8)}"

    def _new_engine(self, state: ORMap) -> SyncEngine:
        engine = SyncEngine(
            self.node_id, cluster=self.cluster, state=state, pruning=self._pruning,
            read_only=self.read_only, acl=self._acl,
        )  # fmt: skip
        engine.on_merge = self._log_merge
        engine.on_denied = _log_denied
        engine.on_limited = self._mark_limited
        return engine

    def _mark_limited(self) -> None:
        """A peer limits what this observer reads: say so once, and keep it in the store."""
        log.info("a peer's read ACL limits the names this observer %s is sent", self.node_id)
        if self._store is not None:  # before anything limited is stored
            self._store.mark_limited()

    def _resume_pruning(self, stored: Stored | None) -> None:
        """Resume the stored pruning state; forget the pruned replicas the state still holds.

        The snapshot and log may predate the pruning (the cleanup is not
        logged), so every pruned replica is cleaned from the loaded state.
        """
        self._pruning_saved = self._engine.pruning.changes
        """The pruning state's version (``Pruning.changes``) last saved, or found empty."""
        pruning = stored.pruning if stored is not None else None
        if pruning is None:
            return
        pruning.config = self._pruning
        engine = self._engine
        engine.pruning = pruning
        for replica_id in pruning.pruned:
            if replica_id != engine.state.replica_id:
                engine.state.cleanup(replica_id, INT64_MAX)
        self._pruning_saved = pruning.changes

    def _resume_session(self, stored: Stored | None) -> None:
        """After a clean stop, resume the sync session: the same epoch, buffer and acks.

        Peers then send this node only their deltas since it stopped, and it
        sends them what they had not acknowledged, where a new epoch would be
        repaired by context and end in a full-state snapshot. A session that
        does not decode is a cache lost, not state: the node starts a new
        epoch and says so.
        """
        self._resumed: dict[str, str] = {}
        """URL -> the node id a resumed session knows there, until an exchange confirms it."""
        if stored is None or stored.session is None or self._store is None:
            return
        try:
            session.resume(self._engine, stored.session)
            peers = self._engine.peers
            self._resumed = {url: node_id for url, node_id, _ in stored.members if node_id in peers}
        except DecodeError as exc:
            log.warning("%s holds a sync session that does not decode (%s): this node starts "
                        "a new epoch, and its peers repair it", self._store.path, exc)  # fmt: skip

    def _log_merge(self, part: ORMap) -> None:
        """Log a peer's part merged into the state (under the lock): durable as it is acked."""
        if self._store is not None:
            self._store.append(part)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Bind the server, open the client, and start gossiping."""
        if self._loop is not None:
            raise RuntimeError("this node is already started")
        if self.data_dir is not None and self._store is None:  # started again after a stop
            self._store = Store(self.data_dir, durability=self.durability)
            self._store.load()
            with self._lock:
                self._log_batch()
        self._loop = asyncio.get_running_loop()
        self._push = asyncio.Event()
        server_ssl, client_ssl = self._ssl or (None, None)
        server = SyncServer(
            self, host=self.host, port=self.port, channel=self._channel, ssl=server_ssl,
            bind_node_ids=self._bind_node_ids,
        )  # fmt: skip
        client = SyncClient(
            timeout=self.exchange_timeout, channel=self._channel, ssl=client_ssl,
            bind_node_ids=self._bind_node_ids,
        )  # fmt: skip
        try:
            await server.start()
            await client.start()
        except BaseException:
            await client.close()
            await server.stop()
            self._loop = None
            raise
        self._server, self._client = server, client
        self._url = server.url
        self.port = server.port  # a restart of this Node object keeps its URL
        self._started_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._gossip_forever(), name=f"agentsync-gossip-{self.node_id}"),
            asyncio.create_task(self._push_forever(), name=f"agentsync-push-{self.node_id}"),
            asyncio.create_task(self._watch_forever(), name=f"agentsync-watch-{self.node_id}"),
            asyncio.create_task(self._prune_forever(), name=f"agentsync-prune-{self.node_id}"),
        ]
        if self.discovery:  # announcing probes the LAN for about 1.6 s: not in start's way
            self._tasks.append(
                asyncio.create_task(self._announce(), name=f"agentsync-mdns-{self.node_id}")
            )
        log.info("node %s serving %s", self.node_id, self._url)

    def stop(self) -> Any:
        """Stop gossiping, close the client and the server.

        ``await node.stop()``. A node from ``start_background`` can also be
        stopped with a plain ``node.stop()`` from any thread; it returns once
        the node and its thread are down. A node never started closes its
        store at once (the data directory is free again), awaited or not.
        """
        loop, thread = self._loop, self._thread
        if loop is None:
            self._close_store()
        if thread is not None and loop is not None and threading.current_thread() is not thread:
            future = asyncio.run_coroutine_threadsafe(self._stop(), loop)
            future.result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._thread = None
            return _Done()
        return self._stop()

    async def _stop(self) -> None:
        if self._loop is None:
            return
        tasks, self._tasks = [*self._tasks, *self._probes], []
        self._probes.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        mdns, self._mdns = self._mdns, None
        if mdns is not None:
            await mdns.stop()
        if self._client is not None:
            await self._client.close()
        if self._server is not None:
            await self._server.stop()
        self._client = self._server = None
        self._loop = None
        self._close_store()
        log.info("node %s stopped", self.node_id)

    def _close_store(self) -> None:
        """Save the members, pruning state and sync session, and close the store cleanly."""
        store, self._store = self._store, None
        if store is not None:
            with self._lock:
                self._save_members(store)
                try:
                    self._save_pruning(store)
                except StoreError:  # closing goes on: a restart prunes again if need be
                    log.exception("saving the pruning state failed")
                try:
                    store.save_session(session.save(self._engine))
                except StoreError:  # closing goes on: a restart starts a new epoch
                    log.exception("saving the sync session failed")
                store.close()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    @classmethod
    def start_background(cls, *args: Any, **kwargs: Any) -> Node:
        """Make a Node with these arguments and start it on a loop in a daemon thread.

        For agent code that is not async: the handles and a plain
        ``node.stop()`` are safe to call from any thread.
        """
        node = cls(*args, **kwargs)
        started = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(node.start())
            except BaseException as exc:  # handed to the caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=f"agentsync-{node.node_id}", daemon=True)
        node._thread = thread
        thread.start()
        started.wait()
        if failure:
            node._thread = None
            raise failure[0]
        return node

    @property
    def url(self) -> str:
        """The base URL this node serves, such as ``http://127.0.0.1:PORT``."""
        if self._url is None:
            raise RuntimeError("the node has no URL before start()")
        return self._url

    # -- replicas ---------------------------------------------------------------

    def _child(self, key: object, handle: type[H]) -> H:
        if type(key) is not str or not 0 < len(key) <= MAX_NAME_CHARS:
            raise ValueError(f"a name must be a str of 1 to {MAX_NAME_CHARS} characters")
        path: Path = ((key, handle.KIND),)
        self._check(path)
        return handle(self, path)

    def _check(self, path: Path) -> None:
        """Refuse a handle whose name (or key) already holds another type."""
        with self._lock:
            parent: CRDT | None = self._engine.state
            for key, kind in path:
                if not isinstance(parent, ORMap):
                    return
                held = parent.get(key)
                if held is not None and type(held) is not kind:
                    raise TypeError(f"{key!r} holds a {type(held).__name__}, not a {kind.__name__}")
                parent = held

    def _read(self, path: Path) -> Any:
        with self._lock:
            replica: Any = self._engine.state
            for key, kind in path:
                replica = replica.get(key) if isinstance(replica, ORMap) else None
                if replica is None or type(replica) is not kind:
                    return None
            return replica

    def _write(
        self,
        path: Path,
        fn: Callable[[Any], Any],
        in_place: WriteInPlace | None = None,
        arg: Any = None,
    ) -> None:
        """Apply ``fn`` (a mutator returning its delta) at ``path``, log and spread it.

        ``in_place(replica, arg)``, where given, is the same write without a
        delta (``SyncEngine.step_local``), which a batch's writes and those of
        a node without a store take where they can. A write logged on its own
        needs its delta.
        """
        if self.read_only:
            raise ReadOnlyError(f"node {self.node_id} is read-only: it pulls state, never writes")
        with self._lock:
            batched = self._batch_depth
            store = self._store
            if (
                in_place is None
                or (store is not None and not batched)
                or not self._engine.step_local(path, in_place, arg)
            ):
                delta = _update(self._engine.state, path, fn)
                if store is not None and not batched:  # a batch's: as it ends
                    store.append(delta)
                self._engine.record_local(delta)
            name = path[0][0]
            assert isinstance(name, str)
            if batched:
                self._batch_names.add(name)
                return
        if self._subscribers or self._queues:  # as _changed checks, before making a frozenset
            self._changed(frozenset((name,)), local=True)
        self._wake_push()

    def _log_batch(self) -> None:
        """Under the lock: inside a batch with a store, keep its writes to log as it ends."""
        if self._batch_depth and self._store is not None:
            self._engine.log_writes()

    @contextlib.contextmanager
    def batch(self) -> Generator[None, None, None]:
        """Group writes: one commit, one notification and one eager push for the whole batch.

        With a ``data_dir`` the batch's writes are durable when the block
        ends (all or none, if the process dies inside it).
        """
        with self._lock:
            self._batch_depth += 1
            self._log_batch()
        try:
            yield
        finally:
            with self._lock:
                self._batch_depth -= 1
                names = frozenset(self._batch_names) if not self._batch_depth else frozenset()
                if not self._batch_depth:
                    self._batch_names.clear()
                    blobs = self._engine.logged()
                    if blobs and self._store is not None:
                        self._store.log(blobs)
            if names:
                self._changed(names, local=True)
                self._wake_push()

    @property
    def value(self) -> dict[str, Any]:
        """Every top-level name and its value."""
        with self._lock:
            return dict(self._engine.state.value)  # type: ignore[arg-type]  # names are str

    def names(self) -> dict[str, str]:
        """Every top-level name and the name of its type, such as ``"PNCounter"``."""
        with self._lock:
            return {name: type(replica).__name__ for name, replica in self._items()}

    def describe(self, name: str) -> tuple[str, Any] | None:
        """The type name and value of one top-level name, read together; None if absent."""
        with self._lock:
            replica = self._engine.state.get(name)
            return None if replica is None else (type(replica).__name__, replica.value)

    def _items(self) -> list[tuple[str, CRDT]]:
        return self._engine.state.items()  # type: ignore[return-value]  # names are str

    @property
    def metrics(self) -> SyncMetrics:
        """Counters of the sync traffic (rounds, bytes, errors, full-state fallbacks)."""
        return self._engine.metrics

    # -- change notifications ---------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` after every local write and remote merge.

        Local changes are reported in the writer's thread, remote ones in the
        node's loop. Returns a function that unsubscribes.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def changes(self) -> AsyncIterator[Change]:
        """Yield every change from now on (iterate on the node's loop).

        A consumer that falls ``CHANGE_QUEUE_SIZE`` changes behind loses the
        oldest ones rather than holding memory without bound.
        """
        queue: asyncio.Queue[Change] = asyncio.Queue(CHANGE_QUEUE_SIZE)
        with self._lock:
            self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._queues.discard(queue)

    def _changed(self, names: frozenset[str], *, local: bool) -> None:
        if not names or not (self._subscribers or self._queues):
            return  # the common case on the write path: nobody listens
        change = Change(names, local)
        with self._lock:
            subscribers = list(self._subscribers)
            queues = list(self._queues)
        for callback in subscribers:
            _notify(callback, change)
        loop = self._loop
        for queue in queues:
            if loop is not None and not _on_loop(loop):
                loop.call_soon_threadsafe(_offer, queue, change)
            else:
                _offer(queue, change)

    # -- peers ------------------------------------------------------------------

    def add_peer(self, url: str) -> None:
        """Gossip with the node at ``url`` from now on (ValueError if it is no URL)."""
        base = normalize_url(url)
        self._check_scheme(base)
        self._add_member(base, "manual")

    def _reaches(self, base: str) -> bool:
        """Whether this node may send to ``base``: with TLS, over https only."""
        return self._ssl is None or base.startswith("https://")

    def _check_scheme(self, base: str) -> None:
        if not self._reaches(base):
            raise ValueError(f"this node has TLS and sends nothing over plain http: {base}")

    def _add_member(
        self, base: str, source: Source, node_id: str | None = None, introducer: str | None = None
    ) -> None:
        if not self._reaches(base):
            log.debug("skipped %s from %s: this node has TLS", base, introducer or source)
            return
        with self._lock:
            if base == self._url:
                return
            self._membership.add(
                base, now=time.monotonic(), node_id=node_id, source=source, introducer=introducer
            )

    def members(self) -> list[Member]:
        """Every member with its node id, URL, state and last contact (``time.monotonic()``)."""
        with self._lock:
            return self._membership.members()

    def remove_peer(self, url: str) -> None:
        """Stop gossiping with the node at ``url`` (it may still contact this node)."""
        base = normalize_url(url)
        with self._lock:
            member = self._membership.get(base)
            if member is not None and self._membership.remove(base):
                self._noted(Transition(base, member.node_id, member.state, None))

    @property
    def peers(self) -> list[str]:
        """The base URLs of the known peers."""
        with self._lock:
            return list(self._membership)

    async def sync_now(self) -> None:
        """Run one push-pull exchange with every known peer; return when all are done or failed.

        An exchange already under way with a peer is waited for first, since it
        may have left before the latest writes.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("the node is not started")
        if not _on_loop(loop):
            future = asyncio.run_coroutine_threadsafe(self.sync_now(), loop)
            await asyncio.wrap_future(future)
            return
        await asyncio.gather(*(self._exchange(url, after_inflight=True) for url in self.peers))

    # -- gossip -----------------------------------------------------------------

    async def _gossip_forever(self) -> None:
        while True:
            await asyncio.sleep(self.gossip_interval * self._rng.uniform(0.8, 1.2))
            await self._round()

    async def _push_forever(self) -> None:
        """Push local writes at once, at most once per quarter interval."""
        assert self._push is not None
        while True:
            await self._push.wait()
            self._push.clear()
            await self._round(limit=max(1, self.fanout - 1))
            await asyncio.sleep(self.gossip_interval / 4)

    async def _round(self, limit: int | None = None) -> None:
        """Exchange with ``fanout`` random peers, or ``limit`` for an eager push.

        A gossip round passes over peers this node exchanged with less than an
        interval ago, whichever side started it: one push-pull exchange
        already carried both directions, so two per interval on a link would
        send each direction in two batches (twice the headers) for little
        gain, and the round's fanout goes to peers it has not heard from.
        An eager push skips no one: its writes are new.
        """
        assert self._client is not None
        with self._lock:
            candidates = self._membership.gossip_candidates()
        ready = [url for url in candidates if self._client.ready(url)]
        if limit is None:
            ready = [url for url in ready if not self._exchanged_lately(url)]
        chosen = self._rng.sample(ready, min(limit or self.fanout, len(ready)))
        try:
            await asyncio.gather(*(self._exchange(url) for url in chosen))
        except Exception:  # never let one bad round stop the gossip
            log.exception("a gossip round failed")

    async def _watch_forever(self) -> None:
        """Advance the failure detector; probe idle, suspect and returning members.

        Probes run on their own: the watch never waits for one, since a
        silent peer's probe takes the whole exchange timeout, and the ticks
        that judge every other member must keep their pace (the detection
        bound of ``docs/membership.md`` counts on it).
        """
        while True:
            await asyncio.sleep(min(self.gossip_interval, 0.25))
            with self._lock:
                now = time.monotonic()
                for transition in self._membership.tick(now):
                    self._noted(transition)
                due = self._membership.due(now, limit=PROBES_PER_TICK)
                store = self._store
                self._reannounce()
                if store is not None:
                    self._save_members(store)
                    # Not inside a batch: its writes are not logged until it
                    # ends, and a snapshot of them would make it half durable.
                    if not self._batch_depth and store.wants_compaction(COMPACT_MIN_BYTES):
                        self._compact(store)
            for url in due:
                if url not in self._inflight and len(self._probes) < PROBES_IN_FLIGHT:
                    probe = asyncio.create_task(self._exchange(url), name=f"agentsync-probe-{url}")
                    self._probes.add(probe)
                    probe.add_done_callback(self._probed)

    def _reannounce(self) -> None:
        """After a rotation's ``use``, announce the new primary key's fingerprint over mDNS."""
        mdns, keyring = self._mdns, self.keyring
        fingerprint = keyring.primary.fingerprint if keyring is not None else None
        if mdns is not None and mdns.fingerprint != fingerprint:
            mdns.announce(fingerprint)

    async def _prune_forever(self) -> None:
        """Every ``pruning.interval``: one prune step; an unexpected error is logged, not fatal."""
        while True:
            await asyncio.sleep(self._pruning.interval)
            try:
                self._prune()
            except Exception:
                log.exception("a prune step failed")

    def _prune(self) -> None:
        """Drop stable tombstones and take one step of pruning departed replicas.

        Tombstones wait for every member not removed, not only the alive
        ones: a dead member may come back with a write concurrent with a
        tombstone, which must still find it.
        """
        with self._lock:
            members: builtins.set[str] = builtins.set()
            alive: builtins.set[str] = builtins.set()
            for member in self._membership.members():
                if member.node_id is not None:
                    members.add(member.node_id)
                    if member.state is MemberState.ALIVE and member.last_contact is not None:
                        alive.add(member.node_id)
            engine = self._engine
            engine.prune_stable(members)
            engine.prune_departed(time.monotonic(), members, alive)
            if self._store is not None:
                self._save_pruning(self._store)
            self._check_pruned_out()

    def _save_pruning(self, store: Store) -> None:
        """Under the lock: save the pruning state if it changed since it was last saved."""
        pruning = self._engine.pruning
        if pruning.changes != self._pruning_saved:
            store.save_pruning(pruning.save())
            self._pruning_saved = pruning.changes

    def _check_pruned_out(self) -> None:
        """Under the lock: if this replica was pruned, start anew (after each exchange)."""
        if self._engine.pruned_out:
            self._reincarnate()

    def _reincarnate(self) -> None:
        """Under the lock: this replica was pruned; take a new one, empty, and resync.

        Nothing of the pruned replica is merged anywhere again: the new
        engine starts empty under a new replica id and epoch, and its first
        exchange asks a peer for its full state. The store is reset to the
        new replica, so a restart does not bring the pruned one back. Its
        writes no peer had are lost; the warning gives how many at most.
        """
        old = self._engine
        pruned = old.state.replica_id
        lost = _unshared(old)
        names = frozenset(name for name, _ in self._items())
        engine = self._new_engine(ORMap(self._incarnation()))
        engine.pruning = old.pruning
        engine.metrics = old.metrics
        engine.limited = old.limited
        self._engine = engine
        self._log_batch()  # the batch's later writes (those to the pruned one: never now)
        if self._store is not None:  # its pruning state, carried over, stays saved as it was
            self._store.reset(engine.state.replica_id, engine.state)
        log.warning(
            "replica %s of node %s was pruned by its peers (away longer than they wait): it "
            "starts anew as %s from their state; %s of its writes no peer had reported "
            "holding are lost", pruned, self.node_id, engine.state.replica_id, lost,
        )  # fmt: skip
        if self._loop is not None:  # heard outside the lock, as every change is
            self._loop.call_soon_threadsafe(functools.partial(self._changed, names, local=False))

    def _save_members(self, store: Store) -> None:
        """Under the lock: save the members if they changed, in the order they came."""
        members: list[tuple[str, str | None, str]] = []
        for url in self._membership:
            member = self._membership.get(url)
            if member is not None:
                members.append((url, member.node_id, member.source))
        if members != self._members_saved:
            store.save_members(members)
            self._members_saved = members

    def _compact(self, store: Store) -> None:
        """Under the lock: copy the state, and encode and write it on a worker thread."""
        begun = store.begin_compaction(self._engine.state)
        if begun is None or self._loop is None:
            return
        done = self._loop.run_in_executor(None, store.finish_compaction, *begun)
        done.add_done_callback(_log_compaction)

    def _probed(self, probe: asyncio.Task[bool]) -> None:
        self._probes.discard(probe)
        if not probe.cancelled() and probe.exception() is not None:
            log.error("a probe failed", exc_info=probe.exception())

    def _noted(self, transition: Transition | None) -> None:
        """Log a member's change of state; forget a removed one's sync state (under the lock).

        The engine keeps the delta buffer until every peer it knows acked it:
        a peer that left for good must not pin it.
        """
        if transition is None:
            return
        new = transition.new.value if transition.new is not None else "removed"
        log.info("peer %s (%s): %s -> %s", transition.url, transition.node_id,
                 transition.old.value, new)  # fmt: skip
        node_id = transition.node_id
        if transition.new is None and node_id and self._membership.url_of(node_id) is None:
            self._engine.forget(node_id)

    async def _announce(self) -> None:
        """Announce this node over mDNS and take the peers of its cluster that announce."""
        wildcard = self.host in ("0.0.0.0", "::")
        if self._url is not None and is_loopback(self._url):
            log.warning("mDNS: this node serves %s, which no other host can reach; "
                        "bind host='0.0.0.0' to be found", self._url)  # fmt: skip
        keyring = self.keyring
        try:
            mdns = MdnsDiscovery(
                node_id=self.node_id, cluster=self.cluster, port=self.port,
                on_found=self._found, addresses=None if wildcard else [self.host],
                fingerprint=keyring.primary.fingerprint if keyring is not None else None,
                fingerprints=(lambda: keyring.fingerprints) if keyring is not None else None,
                tls=self._ssl is not None,
            )  # fmt: skip
        except ValueError as exc:
            log.warning("mDNS discovery is off: %s", exc)
            return
        self._mdns = mdns
        try:
            await mdns.start()
        except OSError as exc:
            log.warning("mDNS discovery failed to start: %s", exc)

    def _found(self, peer: Discovered) -> None:
        """A peer announced itself over mDNS: a hint, probed before it is trusted."""
        if not peer.urls:
            return
        try:
            base = normalize_url(peer.urls[0])  # on our subnet, IPv4 first: one URL per node
        except ValueError:
            log.info("mDNS: skipped %s's URL %r", peer.node_id, peer.urls[0])
            return
        self._add_member(base, "mdns", peer.node_id, introducer=f"mdns {base}")

    def _learn(
        self,
        members: tuple[tuple[str, str], ...],
        *,
        sender: str,
        peer_url: str | None,
        remote: str | None = None,
    ) -> None:
        """Take the members a peer named as hints: membership probes them before trusting.

        Not on a node given only ``peers``: it keeps exactly that topology (a
        line stays a line). A request names its sender too
        (``_news_for``); a sender bound to a wildcard address is taken at the
        ``remote`` address its request came from. Loopback URLs are taken only
        from a peer on loopback (at ``peer_url``): they would name the wrong host.
        Each peer (or unknown sender's address) has a bounded number of hints
        outstanding (``MembershipConfig.max_hints_per_introducer``).
        """
        if not self._learns:
            return
        introducer = peer_url or "unknown"
        local = peer_url is None or is_loopback(peer_url)
        for node_id, url in members:
            if node_id == self.node_id:
                continue
            try:
                base = normalize_url(url)
                if node_id == sender and is_wildcard(base) and remote is not None:
                    base = at_address(base, remote)
            except ValueError:
                continue
            if is_wildcard(base) or (is_loopback(base) and not local) or self._reached(node_id):
                continue
            self._add_member(base, "exchange", node_id, introducer)

    def _reached(self, node_id: str) -> bool:
        """Whether ``node_id`` is alive at a URL already (a host on two subnets has two)."""
        url = self._membership.url_of(node_id)
        member = self._membership.get(url) if url is not None else None
        return member is not None and member.state is MemberState.ALIVE

    def _exchanged_lately(self, url: str) -> bool:
        with self._lock:
            member = self._membership.get(url)
        last = member.last_contact if member is not None else None
        return last is not None and time.monotonic() - last < self.gossip_interval

    def _wake_push(self) -> None:
        """Wake the eager push after a local write: not while a wake is pending (the push
        clears it before it sends, so it sends this write too), and not with no peer to
        push to (the gossip round reaches a peer that comes later). A write from another
        thread would otherwise wake the loop's thread each time."""
        loop, push = self._loop, self._push
        if loop is None or push is None or push.is_set() or not self._membership:
            return
        if _on_loop(loop):
            push.set()
        else:
            loop.call_soon_threadsafe(push.set)

    async def _exchange(self, url: str, *, after_inflight: bool = False) -> bool:
        """One exchange with ``url``, then more while a snapshot is under way.

        An exchange already under way with ``url`` (the gossip round and an
        eager push can pick the same peer) is not doubled: it would carry the
        same interval twice. With ``after_inflight`` (``sync_now``), this one
        waits for it to end and then runs: that one may have left before the
        latest writes.
        """
        while (running := self._inflight.get(url)) is not None:
            if not after_inflight:
                return False
            await running.wait()
        ended = self._inflight[url] = asyncio.Event()
        try:
            for _ in range(SNAPSHOT_ROUNDS):
                peer_id = await self._exchange_once(url)
                if peer_id is None or not self._engine.wants_more(peer_id):
                    return peer_id is not None
            return True
        finally:
            del self._inflight[url]
            ended.set()

    async def _exchange_once(self, url: str) -> str | None:
        client = self._client
        if client is None:
            return None
        with self._lock:
            # A resumed session's peer goes on where it stopped; an exchange
            # then confirms (or corrects) who answers at the URL.
            peer_id = self._membership.peer_id(url) or self._resumed.get(url)
            request = self._engine.request(peer_id)
            news = self._news_for(peer_id or url, url, introduce=True)
            request = replace(request, members=news)
            body = encode_message(request)
            self._engine.metrics.bytes_sent += len(body)
        try:
            reply, sealer = await client.exchange_from(url, body)
        except PeerUnavailableError as exc:
            if hash(body) in self._echoes:  # handle_sync saw this very request
                self._echoes.clear()
                with self._lock:
                    self._membership.remove(url)
                log.info("%s is this node itself (a seed or a hint): dropped", url)
                return None
            self._log_failure(url, exc)
            self._failed(url)
            return None
        with self._lock:
            self._engine.metrics.bytes_received += len(reply)
        try:
            response = decode_message(reply)
            if sealer is not None and response.sender != sealer:  # as handle_sync checks
                raise DecodeError(  # who sealed its envelope, or whom its certificate names
                    f"the message names sender {response.sender!r}, but it came from {sealer!r}"
                )
        except DecodeError as exc:
            self.count_error()
            log.warning("bad response from %s: %s", url, exc)
            self._failed(url)
            return None
        try:
            with self._lock:
                changed = self._engine.on_response(response)  # counts its own errors
                self._check_pruned_out()
                self._succeeded(url, response.sender)
                self._learn(response.members, sender=response.sender, peer_url=url)
        except ForgedDotsError as exc:
            _log_forged(exc)
            self._failed(url)
            return None
        except (DecodeError, ProtocolError) as exc:
            log.warning("refused a response from %s: %s", url, exc)
            self._failed(url)
            return None
        self._changed(changed, local=False)
        return response.sender

    # -- what the server calls (transport.server.SyncHandler) ------------------------

    def handle_sync(
        self,
        body: bytes,
        remote: str | None = None,
        sender: str | None = None,
        certified: str | None = None,
    ) -> bytes:
        """Answer a peer's exchange (DecodeError/ProtocolError: the transport says 4xx).

        ``remote`` is the address the request came from: a sender bound to a
        wildcard address is reachable there (see ``_learn``). ``sender`` is
        the node id its envelope was sealed by, ``certified`` the one its
        client certificate names (TLS binding node ids): a member may not
        speak as another (ImpersonationError, a 403, for a certificate).
        """
        with self._lock:
            self._engine.metrics.bytes_received += len(body)
        try:
            message = decode_message(body)
            if certified is not None and message.sender != certified:
                log.warning(
                    "refused a sync request from %s: it names sender %r, but its certificate "
                    "names %r", remote, message.sender, certified,
                )  # fmt: skip
                raise ImpersonationError(message.sender, certified)
            if sender is not None and message.sender != sender:
                raise ProtocolError(
                    f"the message names sender {message.sender!r}, its envelope {sender!r}"
                )
        except (DecodeError, ProtocolError):
            self.count_error()
            raise
        own = message.sender == self.node_id and message.epoch == self._engine.epoch
        if own and len(self._echoes) < MAX_ECHOES:  # refused below; the requester drops the URL
            self._echoes.add(hash(body))
        with self._lock:
            try:
                reply, changed = self._engine.on_request(message)  # counts its own errors
            except ForgedDotsError as exc:
                _log_forged(exc)
                raise
            self._check_pruned_out()
            url = self._membership.url_of(message.sender)
            peer_url = url or _remote_url(remote)
            data = encode_message(replace(reply, members=self._news_for(message.sender, peer_url)))
            if url is not None:  # a peer this node gossips with: it is alive
                self._succeeded(url, message.sender)
            self._learn(message.members, sender=message.sender, peer_url=peer_url, remote=remote)
            self._engine.metrics.bytes_sent += len(data)
        self._changed(changed, local=False)
        return data

    def _succeeded(self, url: str, node_id: str) -> None:
        """Under the lock: ``url`` answered as ``node_id``; one member per node stays."""
        self._refused_by.pop(url, None)
        self._noted(self._membership.on_success(url, node_id, time.monotonic()))
        for transition in self._membership.settle(url):
            self._noted(transition)

    def _failed(self, url: str) -> None:
        with self._lock:
            self._noted(self._membership.on_failure(url, time.monotonic()))

    def _log_failure(self, url: str, exc: PeerUnavailableError) -> None:
        """A refusal (401, 403, 409: a setting to fix) once at WARNING until the peer answers
        again; anything else (a peer down, a timeout: routine) at DEBUG."""
        if exc.status not in REFUSALS:
            log.debug("exchange with %s failed: %s", url, exc)
            return
        if self._refused_by.get(url) != exc.status:
            if len(self._refused_by) >= MAX_REFUSED_LOGGED:
                self._refused_by.clear()
            self._refused_by[url] = exc.status
            log.warning("%s refuses this node: %s", url, exc)

    def _news_for(
        self, peer: str, url: str | None, *, introduce: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """The members to name in a message to ``peer`` (at ``url``): what it was not told yet.

        Under the lock. Each peer is told of each member once, and of every
        member again each ``RETELL_S``, so an idle exchange names none. With
        ``introduce`` (a request), the first message names this node too, so
        that a seed learns the nodes that start from it. Loopback URLs go
        only to a peer on loopback.
        """
        now = time.monotonic()
        told = self._told
        if now >= self._retell_at:
            told.clear()
            self._retell_at = now + RETELL_S
        first = peer not in told
        news, told[peer] = self._membership.news(told.pop(peer, 0), MAX_MEMBERS - introduce)
        if len(told) > TOLD_PEERS:
            del told[next(iter(told))]  # the peer heard from least recently
        if introduce and first and self._url is not None:
            news.insert(0, (self.node_id, self._url))
        if not news:  # an idle exchange: nothing to judge (this runs for every message)
            return ()
        local = url is not None and is_loopback(url)
        return tuple(
            (node_id, member)
            for node_id, member in news
            if member != url and (local or not is_loopback(member))
        )

    def count_error(self) -> None:
        """Count a request the transport refused before it reached the engine."""
        with self._lock:
            self._engine.metrics.errors += 1

    def count_auth_failure(self) -> None:
        """Count a request refused with 401: unauthenticated, forged, replayed or stale."""
        with self._lock:
            self._auth_failures += 1

    @property
    def auth_failures(self) -> int:
        """Requests refused with 401 since this Node was made."""
        return self._auth_failures

    def health(self) -> dict[str, Any]:
        """Liveness and peers, for ``GET /v1/health`` and ``agentsync status``."""
        client = self._client
        now = time.monotonic()
        with self._lock:
            peers = [
                {
                    "url": member.url,
                    "node_id": member.node_id if member.last_contact is not None else None,
                    "state": member.state.value,
                    "source": member.source,
                    "failures": client.failures(member.url) if client else 0,
                    "last_ok_s_ago": round(now - member.last_contact, 3)
                    if member.last_contact is not None
                    else None,
                    "catch_up": {
                        way: list(progress)
                        for way, progress in self._engine.catch_up(member.node_id).items()
                    }
                    if member.node_id is not None and member.last_contact is not None
                    else {},
                }
                for member in self._membership.members()
            ]
        return {
            "node_id": self.node_id,
            "cluster": self.cluster,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "url": self._url,
            "uptime_s": round(now - self._started_at, 3) if self._started_at else 0.0,
            "peers": peers,
        }

    def state_json(self) -> dict[str, Any]:
        """Every name with its type and value, for ``GET /v1/state`` and ``agentsync dump``."""
        readable = self._http_reads()
        with self._lock:
            names = {
                name: {"type": type(replica).__name__, "value": to_json(replica.value)}
                for name, replica in self._items()
                if readable is None or readable(name)
            }
        return {"node_id": self.node_id, "cluster": self.cluster, "names": names}

    def status_json(self) -> dict[str, Any]:
        """What the status page shows (``GET /v1/status``), bounded: see ``agentsync.status``."""
        with self._lock:
            return report(self.health(), self._engine, self._auth_failures, self._http_reads())

    def _http_reads(self) -> Callable[[object], bool] | None:
        """The names an HTTP read may show: a request names no node, so the ``"*"`` rule's."""
        return None if self._acl is None else self._acl.reads(ANY_PEER)

    def metrics_text(self) -> str:
        """The Prometheus text exposition of the sync metrics."""
        with self._lock:
            return exposition(
                self._engine.metrics,
                auth_failures=self._auth_failures,
                peers=len(self._membership),
                delta_buffer_bytes=self._engine.delta_buffer_bytes,
            )


def _check_arguments(
    node_id: object, *, host: object, port: object, gossip_interval: object, fanout: object,
    discovery: object, durability: object, pruning: object, read_only: object,
    exchange_timeout: object,
) -> None:  # fmt: skip
    """Refuse a bad constructor argument with a clear error, before anything starts."""
    if type(node_id) is not str or not 0 < len(node_id) <= MAX_NODE_ID_CHARS:
        raise ValueError(f"node_id must be a str of 1 to {MAX_NODE_ID_CHARS} characters")
    if type(host) is not str or not host:
        raise ValueError("host must be a non-empty str")
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")
    if isinstance(gossip_interval, bool) or not isinstance(gossip_interval, (int, float)):
        raise TypeError("gossip_interval must be a number of seconds")
    if not (math.isfinite(gossip_interval) and gossip_interval > 0):
        raise ValueError("gossip_interval must be a finite number of seconds > 0")
    if isinstance(exchange_timeout, bool) or not isinstance(exchange_timeout, (int, float)):
        raise TypeError("exchange_timeout must be a number of seconds")
    if not (math.isfinite(exchange_timeout) and 0 < exchange_timeout <= MAX_EXCHANGE_TIMEOUT_S):
        raise ValueError(
            f"exchange_timeout must be a number of seconds in (0, {MAX_EXCHANGE_TIMEOUT_S:g}]"
        )
    if type(fanout) is not int or fanout < 1:
        raise ValueError("fanout must be an int >= 1")
    if type(discovery) is not bool:
        raise TypeError("discovery must be a bool")
    if type(read_only) is not bool:
        raise TypeError("read_only must be a bool")
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
    if pruning is not None and not isinstance(pruning, PruningConfig):
        raise TypeError("pruning must be an agentsync.sync.PruningConfig")


def _unshared(engine: SyncEngine) -> str:
    """How many of the engine's own writes (dots) may be on no peer, as the engine knows it.

    Above what the pruning owner took over, if its marker arrived; else
    above the most any peer reported holding (its vector, which a peer
    running an older revision never sends: then all of them, "up to").
    """
    replica = engine.state.replica_id
    top = engine.state.context.version_vector.get(replica, 0)
    marker = engine.pruning.table.get(replica)
    if isinstance(marker, Performed):
        return str(max(0, top - marker.up_to))
    held = max((p.vector.get(replica, 0) for p in engine.peers.values() if p.vector), default=0)
    return f"up to {max(0, top - held)}"


def _log_denied(sender: str, names: frozenset[str]) -> None:
    """Log a delta the ACL dropped: who sent it, and the names it may not write here."""
    log.warning("dropped a delta from %s: it touches names it may not write here: %s",
                sender, ", ".join(sorted(names)))  # fmt: skip


def _log_forged(error: ForgedDotsError) -> None:
    """Log a claim of this replica's unissued dots: who sent it, and what an operator does."""
    log.error(
        "refused a message of %s: it claims dot %d of this node's replica %s, which issued "
        "only %d. Either %s forged it, or this node's data directory was restored from a "
        "backup taken after a clean stop, and its replica id now reissues dots its peers "
        "have seen (their later writes of it would be lost). In that case stop this node, "
        "move its data directory away and start it empty: it takes a new replica id and "
        "resyncs from its peers", error.sender, error.claimed, error.replica_id,
        error.issued, error.sender,
    )  # fmt: skip


def _update(state: ORMap, path: Path, fn: Callable[[Any], Any]) -> ORMap:
    """Apply ``fn`` to the replica at ``path``, through every map on the way; the delta."""
    key, kind = path[0]
    if len(path) == 1:
        return state.update(key, kind, fn)
    return state.update(key, ORMap, lambda nested: _update(nested, path[1:], fn))


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _notify(callback: Callable[[Change], None], change: Change) -> None:
    """Call one subscriber; its bug is logged, never raised into the writer."""
    try:
        callback(change)
    except Exception:
        log.exception("a change subscriber failed")


def _offer(queue: asyncio.Queue[Change], change: Change) -> None:
    """Queue a change, dropping the oldest when the consumer fell too far behind."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(change)


def _open_store(
    data_dir: str | None,
    durability: Durability,
    node_id: str | None,
    cluster: str,
    read_only: bool,
) -> tuple[Store | None, Stored | None]:
    """The store in ``data_dir`` (None without one) and what it holds, checked against
    the node id and cluster asked for, and against a writer opening a limited observer's
    state (ValueError; the store is closed)."""
    if data_dir is None:
        return None, None
    store = Store(data_dir, durability=durability)
    try:
        stored = store.load()
        if stored is not None and node_id is not None and node_id != stored.node_id:
            raise ValueError(f"{store.path} holds node {stored.node_id!r}, not {node_id!r}: "
                             "give its id, or no id, or another data_dir")  # fmt: skip
        if stored is not None and cluster != stored.cluster:
            raise ValueError(
                f"{store.path} holds a node of cluster {stored.cluster!r}, not {cluster!r}"
            )
        if stored is not None and stored.limited and not read_only:
            raise ValueError(
                f"{store.path} holds an observer that a read ACL limited: its state takes "
                "writes it was never sent as seen, and a writer would pass that on. Open it "
                "with read_only=True, or start the writer with another data_dir (an observer "
                "holds no write of its own, so nothing is lost)"
            )
    except BaseException:
        store.close()
        raise
    return store, stored


def _log_compaction(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("compacting the store failed", exc_info=done.exception())


def _remote_url(remote: str | None) -> str | None:
    """A URL for the address a request came from, to judge it (loopback or not), or None."""
    try:
        return at_address("http://0.0.0.0", remote) if remote is not None else None
    except ValueError:
        return None


def to_json(value: Any) -> Any:
    """A replica value as JSON: sets and tuples become lists, bytes ``{"$bytes": base64}``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (frozenset, builtins.set)):
        return sorted((to_json(item) for item in value), key=repr)
    if isinstance(value, (tuple, list)):
        return [to_json(item) for item in value]
    if isinstance(value, (dict, MappingProxyType)):
        return {k if isinstance(k, str) else repr(k): to_json(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    return repr(value)


__all__ = ["Change", "Handle", "Node", "to_json"]
