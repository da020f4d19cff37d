"""Finding peers on the local network with mDNS/DNS-SD (python-zeroconf).

A node registers ``_agentsync._tcp.local.`` with TXT keys ``id`` (its node
id), ``cluster`` and ``proto`` (the sync protocol version), ``keyfp``, the
public fingerprint of its primary key when its cluster has a secret, and
``tls=1`` when it serves https. It browses for the same type, and reports
each service of its own cluster and protocol, other than itself, whose
fingerprint it accepts (one of its own keys', or none when it has no key)
and that speaks its scheme (https to a TLS node, http to a plain one), as a
``Discovered`` with one URL per address.

Every record is an untrusted hint: anyone on the link can announce one, and
spoofing works (a rogue that skips probing takes over a live peer's
address within about a second). So the name, port,
addresses and TXT record are checked by the pure functions below before
anything is reported; each service name triggers at most one resolution,
hence one report, per ``REPORT_INTERVAL``; and at most ``MAX_SERVICES``
names are followed at once. Who a peer really is gets settled by the first
sync exchange, not here. mDNS is no liveness signal either: a cut-off peer
stays in caches for a long time (zeroconf keeps PTR records at least
1125 s) and a rogue's goodbye removes a live one, so removals are only
logged, never reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import ifaddr  # a dependency of zeroconf
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from agentsync.errors import DecodeError
from agentsync.sync.messages import MAX_CLUSTER_CHARS, PROTOCOL_VERSION

log = logging.getLogger("agentsync.discovery")

Interfaces: TypeAlias = InterfaceChoice | Sequence[str | int]
"""Where to listen: ``InterfaceChoice.All`` or ``Default``, or interface addresses
(IPv4 and IPv6) and IPv6 interface indexes, as zeroconf takes them."""

SERVICE_TYPE = "_agentsync._tcp.local."
"""The DNS-SD service type every agentsync node registers and browses."""

REPORT_INTERVAL = 1.0
"""Seconds between two resolutions (so two reports) triggered by one service name."""
MAX_SERVICES = 256
"""The most service names remembered for rate limiting, and the most resolved at once."""
RESOLVE_TIMEOUT_MS = 3000
"""How long one resolution waits for a service's SRV, TXT and address records."""

MAX_NAME_CHARS = 255
"""The longest full service name (a DNS name is at most 255 octets)."""
MAX_INSTANCE_BYTES = 63
"""The longest instance label, in UTF-8 bytes (one DNS label)."""
MAX_TXT_BYTES = 512
"""The largest TXT record accepted: ours is well under 400 bytes."""
MAX_TXT_ENTRIES = 16
"""The most strings one TXT record may hold (known or not)."""
MAX_KEY_CHARS = 9
"""The longest TXT key (RFC 6763 section 6.4 recommends 9 characters at most)."""
MAX_ID_CHARS = 250
"""The longest node id in a TXT record: a TXT string holds 255 bytes, ``id=`` included."""
MAX_PROTO_DIGITS = 6
"""The most digits a protocol version may have."""
MAX_URLS = 16
"""The most addresses, hence URLs, one service may report."""
MAX_FINGERPRINT_CHARS = 64
"""The longest key fingerprint in a TXT record (ours has 12 hex digits)."""

_TXT_KEYS = ("id", "cluster", "proto")
_TXT_LIMITS = {
    "id": MAX_ID_CHARS,
    "cluster": MAX_CLUSTER_CHARS,
    "proto": MAX_PROTO_DIGITS,
    "keyfp": MAX_FINGERPRINT_CHARS,
    "tls": 1,
}
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9-]+")
_INSTANCE_SLUG_CHARS = 40
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class Discovered:
    """A peer found on the local network: an untrusted hint, checked but not authenticated."""

    node_id: str
    cluster: str
    proto: int
    urls: tuple[str, ...]
    """``http(s)://HOST:PORT`` per address: on this host's networks first, then IPv4 first.

    IPv6 hosts are bracketed (link-local ones with their scope).
    """
    fingerprint: str | None = None
    """The public fingerprint of the key it announces, None if it has no secret."""


def check_name(name: object) -> str:
    """Return ``name`` if it names an instance of ``SERVICE_TYPE`` well; else DecodeError."""
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_CHARS:
        raise DecodeError("service name is not a str of 1 to 255 characters")
    if not name.lower().endswith("." + SERVICE_TYPE):
        raise DecodeError(f"service name {name!r} is not of type {SERVICE_TYPE}")
    instance = name[: -len(SERVICE_TYPE) - 1]
    if not instance.isprintable():
        raise DecodeError(f"service name {name!r} has control characters")
    size = len(instance.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_INSTANCE_BYTES:
        raise DecodeError(f"service name {name!r} has an instance label of {size} bytes")
    return name


def check_port(port: object) -> int:
    """Return ``port`` if it is a TCP port (1 to 65535); else DecodeError."""
    if type(port) is not int or not 0 < port < 1 << 16:
        raise DecodeError(f"port {port!r} is not 1 to 65535")
    return port


def parse_txt(text: object) -> dict[str, str]:
    """The ``id``, ``cluster``, ``proto``, ``keyfp`` and ``tls`` values of a TXT record.

    DecodeError unless the record is small, every string printable ASCII, no
    key twice (keys compare case-insensitively) and the three first keys
    present with values of bounded size (``keyfp`` and ``tls`` are optional,
    ``tls`` is ``1`` if present); ``proto`` is decimal digits. Unknown keys
    are ignored, so that a later version may add some.
    """
    if not isinstance(text, bytes):
        raise DecodeError("TXT record is not bytes")
    if len(text) > MAX_TXT_BYTES:
        raise DecodeError(f"TXT record of {len(text)} bytes is over {MAX_TXT_BYTES}")
    seen: set[str] = set()
    values: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        end = pos + 1 + text[pos]
        entry = text[pos + 1 : end]
        pos = end
        if end > len(text):
            raise DecodeError("TXT record ends inside a string")
        if not entry:
            continue  # an empty string: the whole record of a service without keys
        if len(seen) == MAX_TXT_ENTRIES:
            raise DecodeError(f"TXT record has over {MAX_TXT_ENTRIES} strings")
        if not _PRINTABLE_ASCII.fullmatch(entry):
            raise DecodeError(f"TXT string {entry[:40]!r} is not printable ASCII")
        key, sep, value = entry.decode("ascii").partition("=")
        key = key.lower()
        if not 0 < len(key) <= MAX_KEY_CHARS or key in seen:
            raise DecodeError(f"TXT key {key!r} is empty, too long or repeated")
        seen.add(key)
        if key in _TXT_LIMITS:
            if not sep or not 0 < len(value) <= _TXT_LIMITS[key]:
                raise DecodeError(f"TXT {key} has no value or one over {_TXT_LIMITS[key]} chars")
            values[key] = value
    missing = [key for key in _TXT_KEYS if key not in values]
    if missing:
        raise DecodeError(f"TXT record lacks {', '.join(missing)}")
    if not values["proto"].isdigit():  # ASCII here, so digits 0-9 only
        raise DecodeError(f"TXT proto {values['proto']!r} is not a number")
    if values.get("tls", "1") != "1":
        raise DecodeError(f"TXT tls {values['tls']!r} is not 1")
    return values


def check_address(address: str) -> str:
    """The canonical spelling of an address a peer may be reached at; else DecodeError.

    Refused: what does not parse, the unspecified, multicast, loopback
    (another host's loopback is ours) and limited broadcast addresses, and
    an IPv6 link-local address without a scope id (it names no interface).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DecodeError(f"address {address[:60]!r} does not parse") from None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip == _LIMITED_BROADCAST:
        raise DecodeError(f"address {address} is unspecified, multicast, loopback or broadcast")
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local and not ip.scope_id:
        raise DecodeError(f"link-local address {address} has no scope id")
    return ip.compressed


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_urls(
    addresses: Iterable[str], port: int, networks: Iterable[Network] = (), scheme: str = "http"
) -> tuple[str, ...]:
    """The ``SCHEME://HOST:PORT`` URLs of the usable addresses, at most ``MAX_URLS``.

    Addresses on one of this host's ``networks`` come first (a host on two
    subnets announces both, and only one may be reachable from here), then
    IPv4 before IPv6. Unusable addresses are skipped (and logged);
    duplicates are dropped.
    """
    nets = list(networks)
    ranked: dict[str, tuple[bool, bool]] = {}
    for address in addresses:
        try:
            host = check_address(address)
        except DecodeError as exc:
            log.debug("mDNS: skipping an address: %s", exc)
            continue
        v6 = ":" in host
        url = f"{scheme}://[{host}]:{port}" if v6 else f"{scheme}://{host}:{port}"
        ip = ipaddress.ip_address(host.split("%")[0])
        ranked.setdefault(url, (not any(ip in net for net in nets), v6))
    return tuple(sorted(ranked, key=ranked.__getitem__))[:MAX_URLS]


def local_networks() -> list[Network]:
    """The networks this host's interfaces are on (link-local IPv6 aside: it is everywhere)."""
    return [
        interface.network
        for adapter in ifaddr.get_adapters()
        for interface in _interfaces(adapter)
        if not (interface.ip.is_loopback or interface.ip.is_link_local)
    ]


def _interfaces(adapter: ifaddr.Adapter) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """An adapter's addresses with their prefixes (ifaddr gives IPv6 as (address, flow, scope))."""
    return [
        ipaddress.ip_interface(f"{a.ip[0] if isinstance(a.ip, tuple) else a.ip}/{a.network_prefix}")
        for a in adapter.ips
    ]


def parse_service(
    info: ServiceInfo,
    *,
    cluster: str,
    own_id: str,
    networks: Iterable[Network] = (),
    fingerprints: Collection[str] = (),
    tls: bool = False,
) -> Discovered | None:
    """The peer a resolved service announces, or None if it is malformed, foreign or this node.

    Its URLs put the addresses on ``networks`` (this host's) first. A peer
    is foreign too when its key fingerprint is not one of ``fingerprints``
    (this node's keys'), or when it has one and this node has none: such a
    peer could not authenticate with it; and when it announces TLS and this
    node does not (``tls``), or the other way round: the two cannot talk.

    Malformed records are logged at INFO, services of another cluster,
    protocol or key and this node's own at DEBUG.
    """
    try:
        name = check_name(info.name)
        port = check_port(info.port)
        txt = parse_txt(info.text)
        scheme = "https" if "tls" in txt else "http"
        urls = peer_urls(info.parsed_scoped_addresses(), port, networks, scheme)
        if not urls:
            raise DecodeError("no usable address")
    except DecodeError as exc:
        log.info("mDNS: dropping service %r: %s", info.name[:MAX_NAME_CHARS], exc)
        return None
    proto = int(txt["proto"])
    if txt["cluster"] != cluster or proto != PROTOCOL_VERSION or txt["id"] == own_id:
        log.debug(
            "mDNS: ignoring service %r: node %r, cluster %r, protocol %d",
            name,
            txt["id"],
            txt["cluster"],
            proto,
        )
        return None
    fingerprint = txt.get("keyfp")
    if not (fingerprint in fingerprints if fingerprints else fingerprint is None):
        log.debug("mDNS: ignoring service %r: node %r announces key fingerprint %r, not ours",
                  name, txt["id"], fingerprint)  # fmt: skip
        return None
    if ("tls" in txt) != tls:
        log.debug("mDNS: ignoring service %r: node %r serves %s, this node %s",
                  name, txt["id"], scheme, "https" if tls else "http")  # fmt: skip
        return None
    return Discovered(
        node_id=txt["id"], cluster=txt["cluster"], proto=proto, urls=urls, fingerprint=fingerprint
    )


class ReportGate:
    """When a service name may next trigger a resolution: once per ``interval`` per name.

    At most ``max_names`` names are remembered; a new name beyond that
    forgets the one admitted longest ago (which may then be admitted early
    once: memory stays bounded, and a flood of names cannot lock real peers
    out for good).
    """

    def __init__(
        self, *, interval: float, max_names: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval < 0 or max_names < 1:
            raise ValueError("a report gate needs interval >= 0 and max_names >= 1")
        self._interval = interval
        self._max_names = max_names
        self._clock = clock
        self._next: OrderedDict[str, float] = OrderedDict()

    def admit(self, name: str) -> float:
        """Reserve ``name``'s next slot; return the seconds to wait for it (0.0: now)."""
        key = name.lower()  # DNS names compare case-insensitively
        now = self._clock()
        at = max(now, self._next.pop(key, now))
        if len(self._next) >= self._max_names:
            forgotten, _ = self._next.popitem(last=False)
            log.debug("mDNS: over %d service names, forgetting %r", self._max_names, forgotten)
        self._next[key] = at + self._interval
        return at - now

    def __len__(self) -> int:
        return len(self._next)


class MdnsDiscovery:
    """Announce this node over mDNS and report the peers of its cluster that announce.

    ``on_found`` runs on the event loop for each valid peer, again when it
    re-announces or changes (at most once per ``REPORT_INTERVAL`` per
    service). Without ``addresses``, every non-loopback address of the
    host (of the ``ip_version`` chosen) is announced. ``fingerprint`` is
    announced as ``keyfp``; ``fingerprints`` gives the ones accepted from
    peers (by default ``fingerprint`` alone), asked afresh for each peer,
    so that a key installed during a rotation counts at once.
    """

    def __init__(
        self,
        *,
        node_id: str,
        cluster: str,
        port: int,
        on_found: Callable[[Discovered], None],
        addresses: Sequence[str] | None = None,
        interfaces: Interfaces = InterfaceChoice.All,
        ip_version: IPVersion = IPVersion.All,
        fingerprint: str | None = None,
        fingerprints: Callable[[], Collection[str]] | None = None,
        tls: bool = False,
    ) -> None:
        self._tls = tls
        name = f"{_instance_label(node_id)}.{SERVICE_TYPE}"
        self._info = _service_info(name, node_id, cluster, port, fingerprint, tls=tls)
        if addresses is not None:
            addresses = [ipaddress.ip_address(address).compressed for address in addresses]
        self.node_id = node_id
        self.cluster = cluster
        self.fingerprint = fingerprint
        self._port = port
        self._fingerprints = fingerprints or (lambda: () if fingerprint is None else (fingerprint,))
        self._on_found = on_found
        self._addresses = addresses
        self._interfaces = interfaces
        self._ip_version = ip_version
        self._gate = ReportGate(interval=REPORT_INTERVAL, max_names=MAX_SERVICES)
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._registered = False
        self._following: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._updating: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def name(self) -> str:
        """The full service name (it may gain a ``-N`` suffix if another service held it)."""
        return self._info.name

    async def start(self) -> None:
        """Browse, then register this node (probing takes about 1.6 s); once only."""
        if self._aiozc is not None or self._stopped:
            raise RuntimeError("mDNS discovery starts once")
        interfaces = self._interfaces
        if interfaces is InterfaceChoice.All:
            interfaces = listen_interfaces(self._ip_version) or interfaces
        self._aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=self._ip_version)
        try:
            self._browser = AsyncServiceBrowser(
                self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
            )
            addresses = self._addresses
            if addresses is None:
                addresses = local_addresses(self._ip_version, self._interfaces)
            if not addresses:
                log.warning("mDNS: no address to announce; browsing only")
                return
            self._info.addresses = [ipaddress.ip_address(a).packed for a in addresses]
            announced = await self._aiozc.async_register_service(self._info, allow_name_change=True)
            self._registered = True
            await announced
            log.info("mDNS: registered %r at %s", self.name, ", ".join(addresses))
        except BaseException:
            await self.stop()
            raise

    def announce(self, fingerprint: str | None) -> None:
        """Announce ``fingerprint`` from now on (after a rotation's ``use``); on the loop.

        ValueError if peers would refuse the record. The TXT record is
        updated in the background once registered; a later call supersedes it.
        """
        info = _service_info(
            self.name, self.node_id, self.cluster, self._port, fingerprint, tls=self._tls
        )
        info.addresses = self._info.addresses
        info.set_server_if_missing()  # as registering does; updating asserts it
        self._info, self.fingerprint = info, fingerprint
        if self._aiozc is not None and self._registered and self._updating is None:
            self._updating = asyncio.get_running_loop().create_task(self._update())

    async def _update(self) -> None:
        """Send the TXT record until what went out is the latest one asked for."""
        try:
            sent = None
            while self._aiozc is not None and self._registered and sent is not self._info:
                sent = self._info
                await (await self._aiozc.async_update_service(sent))
        except Exception:  # the old record stays up: peers with the new key only skip it
            log.exception("mDNS: updating the TXT record failed")
        finally:
            self._updating = None

    async def stop(self) -> None:
        """Stop following services, say goodbye and close the sockets; idempotent."""
        self._stopped = True
        following = list(self._following.values())
        if self._updating is not None:
            following.append(self._updating)
        self._following.clear()
        self._again.clear()
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._registered:
            self._registered = False
            with contextlib.suppress(Exception):  # the goodbye is a courtesy
                await (await aiozc.async_unregister_service(self._info))
        await aiozc.async_close()

    def _on_change(
        self,
        zeroconf: object,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """A browser event: follow the service up, unless it is gone or followed already."""
        if self._stopped:
            return
        try:
            check_name(name)
        except DecodeError as exc:
            log.info("mDNS: dropping a service: %s", exc)
            return
        if state_change is ServiceStateChange.Removed:
            # Not a death: a rogue's goodbye removes live peers, and dead ones are not removed.
            log.info("mDNS: service %r removed (ignored: mDNS is no liveness signal)", name)
            return
        key = name.lower()
        if key in self._following:
            self._again.add(key)
            return
        if len(self._following) >= MAX_SERVICES:
            log.info("mDNS: %d services resolving already, dropping %r", MAX_SERVICES, name)
            return
        self._following[key] = asyncio.get_running_loop().create_task(
            self._follow(name, key), name=f"agentsync-mdns-{key[:40]}"
        )

    async def _follow(self, name: str, key: str) -> None:
        """Resolve and report ``name``, again while events keep coming, gated by rate."""
        try:
            while True:
                delay = self._gate.admit(key)
                if delay > 0:
                    await asyncio.sleep(delay)
                self._again.discard(key)
                found = await self._resolve(name)
                if found is not None:
                    try:
                        self._on_found(found)
                    except Exception:
                        log.exception("mDNS: on_found failed for %r", found.node_id)
                if key not in self._again:
                    return
        finally:
            if self._following.get(key) is asyncio.current_task():
                del self._following[key]

    async def _resolve(self, name: str) -> Discovered | None:
        if self._aiozc is None:
            return None
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
        except ZeroconfError as exc:  # a name zeroconf itself refuses
            log.info("mDNS: dropping service %r: %s", name, exc)
            return None
        if not await info.async_request(self._aiozc.zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("mDNS: service %r did not resolve", name)
            return None
        return parse_service(
            info, cluster=self.cluster, own_id=self.node_id, networks=local_networks(),
            fingerprints=self._fingerprints(), tls=self._tls,
        )  # fmt: skip


def listen_interfaces(ip_version: IPVersion = IPVersion.All) -> list[str | int]:
    """Every interface but loopback, as zeroconf takes them: IPv4 addresses, IPv6 indexes.

    zeroconf's own ``InterfaceChoice.All`` includes loopback, where sending
    IPv6 multicast can fail (and log a traceback); peers never announce
    loopback addresses anyway. Empty when there is no other interface.
    """
    chosen: list[str | int] = []
    for adapter in ifaddr.get_adapters():
        for interface in _interfaces(adapter):
            ip = interface.ip
            v6 = ip.version == 6
            if ip.is_loopback or (ip_version is IPVersion.V6Only and not v6):
                continue
            if (ip_version is IPVersion.V4Only and v6) or (v6 and adapter.index is None):
                continue
            choice = adapter.index if v6 and adapter.index is not None else ip.compressed
            if choice not in chosen:
                chosen.append(choice)
    return chosen


def local_addresses(
    ip_version: IPVersion = IPVersion.All, interfaces: Interfaces = InterfaceChoice.All
) -> list[str]:
    """This host's addresses worth announcing: not loopback, IPv4 before IPv6.

    With a list of ``interfaces``, only the addresses of the interfaces it
    names (by one of their addresses, or by IPv6 interface index).
    """
    versions = {IPVersion.V4Only: (4,), IPVersion.V6Only: (6,)}.get(ip_version, (4, 6))
    chosen: set[str | int | None] | None = None
    if not isinstance(interfaces, InterfaceChoice):
        chosen = {
            i if isinstance(i, int) else ipaddress.ip_address(i).compressed for i in interfaces
        }
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        ips = [interface.ip for interface in _interfaces(adapter)]
        if chosen is not None and not chosen & {adapter.index, *(ip.compressed for ip in ips)}:
            continue
        found.extend(
            ip.compressed
            for ip in ips
            if ip.version in versions
            and not (ip.is_loopback or ip.is_unspecified or ip.is_multicast)
        )
    return sorted(dict.fromkeys(found), key=lambda address: ":" in address)


def _service_info(
    name: str, node_id: str, cluster: str, port: int, fingerprint: str | None, *, tls: bool
) -> AsyncServiceInfo:
    """The service this node registers; ValueError if peers would refuse its record."""
    properties = {"id": node_id, "cluster": cluster, "proto": str(PROTOCOL_VERSION)}
    if fingerprint is not None:
        properties["keyfp"] = fingerprint
    if tls:
        properties["tls"] = "1"
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, name, port=check_port(port), properties=properties)
        parse_txt(info.text)
    except ValueError as exc:  # DecodeError, or a TXT string over 255 bytes
        raise ValueError(f"cannot announce this node over mDNS: {exc}") from None
    return info


def _instance_label(node_id: str) -> str:
    """A unique, readable instance label: the node id's letters and digits, and random hex."""
    slug = _NOT_LABEL_CHARS.sub("-", node_id)[:_INSTANCE_SLUG_CHARS].strip("-")
    return f"{slug or 'agentsync'}-{secrets.token_hex(4)}"
