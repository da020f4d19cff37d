"""Admission control: how much of a server one address, and all of them together, may hold.

A flood must be refused while refusing is still cheap: before a body is
read or decoded. ``Gate`` counts the connections open and the requests in
flight, per remote address and in total, and says whether one more may
start. It is pure (no sockets, no clock), so its rules are tested alone.

Why concurrency caps and no rate cap: the handler runs on the event loop one
call at a time, so an honest request waits at most for the requests in
flight ahead of it. Capping what one address holds at once bounds that wait
(and the memory of the bodies being read) whatever the attacker's rate,
while a rate cap would also refuse an honest peer's catch-up, which sends
snapshot chunks back to back, and every node of a cluster that shares one
address (several on one host, all on loopback).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

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
