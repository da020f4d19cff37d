"""Admission control and fairness: how much of a server one address may hold and use.

A flood must be refused while refusing is still cheap: before a body is
read or decoded. ``Gate`` counts the connections open and the requests in
flight, per remote address and in total, and says whether one more may
start. It is pure (no sockets, no clock), so its rules are tested alone.

Once admitted, a body is decoded and handled (on the event loop, one at a
time) in ``Turns``: round robin across addresses, so an honest request
waits for at most one handler call per other address with work queued, not
for everything a flood has queued (a megabyte of msgpack empty arrays takes
about 20 ms to decode and refuse).

Why concurrency caps and no rate cap: with the caps and the turns an
honest request's wait is bounded whatever the attacker's rate, while a rate
cap would also refuse an honest peer's catch-up, which sends snapshot
chunks back to back, and every node of a cluster that shares one address
(several on one host, all on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

SLOW_CALL_S = 0.002
"""A handler call longer than this, with more queued, is followed by an equal pause."""
IPV6_PREFIX = 64
"""IPv6 remotes are counted per /64: one host commonly holds a whole /64."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps of one server; the defaults never refuse one honest node's traffic.

    An honest node holds at most its client's 16 requests and pooled
    connections at once (``SyncClient(max_concurrency=16)``); the
    per-address connection cap leaves room for several nodes on one host.
    """

    connections: int = 512
    """Connections open at once, in total: under the common 1024 file descriptor limit."""
    connections_per_remote: int = 64
    """Connections open at once from one address."""
    requests: int = 64
    """Requests in flight at once, in total: at most this many bodies are held in memory."""
    requests_per_remote: int = 16
    """Requests in flight at once from one address."""
    retry_after: int = 1
    """Seconds a refused client is told to wait (``Retry-After``)."""

    def __post_init__(self) -> None:
        for name in ("connections", "connections_per_remote", "requests", "requests_per_remote"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        if type(self.retry_after) is not int or self.retry_after < 0:
            raise ValueError(f"retry_after must be an int >= 0, not {self.retry_after!r}")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one more connection or request may not start, and the status that says so."""

    status: int
    """429 when the address is over its own cap, 503 when the server is full."""
    reason: str


class Gate:
    """What each remote address holds now; ``None`` from ``connect``/``begin`` admits one more.

    Every admitted ``connect`` must be matched by one ``disconnect``, and
    every admitted ``begin`` by one ``end``. An address is forgotten when it
    holds nothing, so the memory kept is bounded by the caps.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits = limits or Limits()
        self._connections = _Tally(limits.connections_per_remote, limits.connections, "connections")
        self._requests = _Tally(limits.requests_per_remote, limits.requests, "requests in flight")

    def connect(self, remote: str) -> Refusal | None:
        """Admit and count one more connection from ``remote`` (a key of ``remote_key``)."""
        return self._connections.take(remote)

    def disconnect(self, remote: str) -> None:
        self._connections.give(remote)

    def begin(self, remote: str) -> Refusal | None:
        """Admit and count one more request in flight from ``remote``."""
        return self._requests.take(remote)

    def end(self, remote: str) -> None:
        self._requests.give(remote)

    def connections(self, remote: str) -> int:
        """Connections open from ``remote`` now."""
        return self._connections.held[remote]

    def requests(self, remote: str) -> int:
        """Requests in flight from ``remote`` now."""
        return self._requests.held[remote]

    @property
    def open_connections(self) -> int:
        """Connections open now, from every address."""
        return self._connections.total

    @property
    def in_flight(self) -> int:
        """Requests in flight now, from every address."""
        return self._requests.total


class _Tally:
    """One kind of thing held, per address and in total, under its two caps."""

    def __init__(self, per_remote: int, cap: int, what: str) -> None:
        self.per_remote = per_remote
        self.cap = cap
        self.what = what
        self.held: Counter[str] = Counter()
        self.total = 0

    def take(self, remote: str) -> Refusal | None:
        if self.held[remote] >= self.per_remote:
            return Refusal(
                429, f"too many {self.what} from this address (at most {self.per_remote})"
            )
        if self.total >= self.cap:
            return Refusal(503, f"too many {self.what} (at most {self.cap}); try again later")
        self.held[remote] += 1
        self.total += 1
        return None

    def give(self, remote: str) -> None:
        self.total -= 1
        if self.held[remote] <= 1:
            del self.held[remote]
        else:
            self.held[remote] -= 1


class FairQueue(Generic[T]):
    """Items queued per address, taken one per address in turn (round robin)."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()

    def put(self, remote: str, item: T) -> None:
        self._queues.setdefault(remote, deque()).append(item)

    def take(self) -> T | None:
        """The next address's oldest item; that address goes to the back of the line."""
        if not self._queues:
            return None
        remote, queue = self._queues.popitem(last=False)
        item = queue.popleft()
        if queue:
            self._queues[remote] = queue
        return item

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())


class Turns:
    """Runs synchronous calls on the event loop one at a time, addresses taking turns.

    Between two calls the loop runs everything else that is ready (I/O, the
    other requests' reads and the client's exchanges). While calls are
    queued, a slow one is followed by a pause as long as it took, so a
    backlog cannot hold the loop more than half the time; with no backlog
    (one peer's catch-up, chunk after chunk) there is no pause.
    """

    def __init__(self) -> None:
        self._queue: FairQueue[tuple[asyncio.Future[object], Callable[[], object]]] = FairQueue()
        self._runner: asyncio.Task[None] | None = None

    async def run(self, remote: str, call: Callable[[], T]) -> T:
        """``call()``'s result (or exception) once ``remote``'s turn comes."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put(remote, (future, call))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_all())
        return await future  # type: ignore[return-value]  # the call's own result

    async def _run_all(self) -> None:
        try:
            while (job := self._queue.take()) is not None:
                future, call = job
                if future.done():  # its request was cancelled while it waited
                    continue
                began = time.perf_counter()
                try:
                    future.set_result(call())
                except Exception as exc:
                    future.set_exception(exc)
                took = time.perf_counter() - began
                # A backlog of slow calls (a flood) gets at most half the loop's time.
                await asyncio.sleep(took if took > SLOW_CALL_S and self._queue else 0)
        finally:
            self._runner = None

    async def close(self) -> None:
        """Cancel the calls still waiting for their turn (the server stops)."""
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._runner = None  # a runner cancelled before it began never ran its finally
        while (job := self._queue.take()) is not None:
            job[0].cancel()


def remote_key(host: str | None) -> str:
    """The address a remote is counted under: IPv4 as is, IPv6 by its /64, anything else ""."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a dual-stack socket's view of an IPv4 peer
            return ip.ipv4_mapped.compressed
        return ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False).compressed
    return ip.compressed
