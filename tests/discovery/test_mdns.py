"""mDNS discovery: record validation against hostile input, rate limits, and real hosts.

The first part drives the pure validators and the event handling without a
network. The last part runs MdnsDiscovery in separate processes on hosts
made of network namespaces (tests/netns.py): peers of one bridge find each
other, other clusters and other bridges are not reported, and nothing is
left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ifaddr
import pytest
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange

from agentsync.discovery import mdns
from agentsync.discovery.mdns import (
    MAX_TXT_BYTES,
    MAX_URLS,
    SERVICE_TYPE,
    Discovered,
    MdnsDiscovery,
    ReportGate,
    check_address,
    check_name,
    check_port,
    parse_service,
    parse_txt,
    peer_urls,
)
from agentsync.errors import DecodeError
from agentsync.sync.messages import MAX_CLUSTER_CHARS, PROTOCOL_VERSION
from tests import netns
from tests.netns import Hosts, Lines, make_hosts, netns_hosts, netns_list, require_netns, wait_until

__all__ = ["netns_hosts"]  # a fixture: imported to be used, not re-exported

NAME = "peer-1._agentsync._tcp.local."
GOOD_TXT = {"id": "peer-1", "cluster": "blue", "proto": str(PROTOCOL_VERSION)}


def txt(*entries: bytes) -> bytes:
    """A raw TXT record of the given strings (each prefixed by its length)."""
    return b"".join(bytes([len(entry)]) + entry for entry in entries)


GOOD_RAW = txt(b"id=peer-1", b"cluster=blue", b"proto=%d" % PROTOCOL_VERSION)


def info(
    name: str = NAME,
    port: int | None = 8000,
    properties: dict[str, str] | bytes | None = None,
    addresses: tuple[str, ...] = ("10.0.0.1", "fd00::1"),
) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        name,
        port=port,
        properties=GOOD_TXT if properties is None else properties,
        parsed_addresses=list(addresses),
    )


def renamed(service: ServiceInfo, name: str) -> ServiceInfo:
    """``service`` under a name zeroconf would refuse to construct, as the wire may carry."""
    service.name = name
    return service


def parse(service: ServiceInfo, own_id: str = "me") -> Discovered | None:
    return parse_service(service, cluster="blue", own_id=own_id)


# ---- names and ports -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        NAME,
        "Peer 1 (kitchen)._agentsync._tcp.local.",
        "a._AGENTSYNC._tcp.local.",
        "ü" * 31 + "." + SERVICE_TYPE,
    ],
)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        None,
        b"peer._agentsync._tcp.local.",
        "",
        SERVICE_TYPE,  # no instance
        "." + SERVICE_TYPE,
        "peer._http._tcp.local.",
        "peer._agentsync._tcp.local",  # no final dot
        "a" * 64 + "." + SERVICE_TYPE,  # a label is 63 bytes at most
        "ü" * 32 + "." + SERVICE_TYPE,  # 64 bytes in UTF-8
        "pe\x00er." + SERVICE_TYPE,
        "pe\ner." + SERVICE_TYPE,
        "a" * 300 + "." + SERVICE_TYPE,
    ],
)
def test_check_name_refuses(name: object) -> None:
    with pytest.raises(DecodeError):
        check_name(name)


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_check_port_accepts(port: int) -> None:
    assert check_port(port) == port


@pytest.mark.parametrize("port", [0, -1, 65536, 1 << 40, None, True, "80", 80.0])
def test_check_port_refuses(port: object) -> None:
    with pytest.raises(DecodeError):
        check_port(port)


# ---- TXT ---------------------------------------------------------------------------------


def test_parse_txt_reads_the_three_keys() -> None:
    assert parse_txt(GOOD_RAW) == GOOD_TXT


def test_parse_txt_ignores_unknown_keys_and_empty_strings() -> None:
    raw = txt(b"", b"ID=peer-1", b"flag", b"later=1", b"Cluster=blue", b"PROTO=1")
    assert parse_txt(raw) == {"id": "peer-1", "cluster": "blue", "proto": "1"}


def test_parse_txt_accepts_the_largest_values() -> None:
    raw = txt(b"id=" + b"i" * 250, b"cluster=" + b"c" * MAX_CLUSTER_CHARS, b"proto=123456")
    assert parse_txt(raw)["id"] == "i" * 250


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(txt(b"cluster=blue", b"proto=1"), id="no id"),
        pytest.param(txt(b"id=a", b"proto=1"), id="no cluster"),
        pytest.param(txt(b"id=a", b"cluster=blue"), id="no proto"),
        pytest.param(b"", id="empty"),
        pytest.param(txt(b""), id="one empty string"),
        pytest.param(txt(b"id", b"cluster=blue", b"proto=1"), id="id without value"),
        pytest.param(txt(b"id=", b"cluster=blue", b"proto=1"), id="empty id"),
        pytest.param(txt(b"id=a", b"cluster=", b"proto=1"), id="empty cluster"),
        pytest.param(txt(b"id=" + b"i" * 251, b"cluster=b", b"proto=1"), id="id too long"),
        pytest.param(
            txt(b"id=a", b"cluster=" + b"c" * (MAX_CLUSTER_CHARS + 1), b"proto=1"),
            id="cluster too long",
        ),
        pytest.param(txt(b"id=a", b"cluster=b", b"proto=1234567"), id="proto too long"),
        pytest.param(txt(b"id=a", b"cluster=b", b"proto=-1"), id="negative proto"),
        pytest.param(txt(b"id=a", b"cluster=b", b"proto=+1"), id="signed proto"),
        pytest.param(txt(b"id=a", b"cluster=b", b"proto= 1"), id="spaced proto"),
        pytest.param(txt(b"id=a", b"cluster=b", b"proto=0x1"), id="hex proto"),
        pytest.param(txt(b"id=a", b"cluster=b", "proto=\u0661".encode()), id="arabic digit"),
        pytest.param(txt("id=é".encode(), b"cluster=b", b"proto=1"), id="non-ASCII"),
        pytest.param(txt(b"id=\xff\xfe", b"cluster=b", b"proto=1"), id="not UTF-8"),
        pytest.param(txt(b"id=a\x00b", b"cluster=b", b"proto=1"), id="NUL"),
        pytest.param(txt(b"id=a\nb", b"cluster=b", b"proto=1"), id="newline"),
        pytest.param(txt(b"id=a\x7f", b"cluster=b", b"proto=1"), id="DEL"),
        pytest.param(txt(b"id=a", b"id=b", b"cluster=b", b"proto=1"), id="id twice"),
        pytest.param(txt(b"id=a", b"ID=a", b"cluster=b", b"proto=1"), id="id twice, cased"),
        pytest.param(txt(b"id=a", b"x=1", b"x=2", b"cluster=b", b"proto=1"), id="unknown twice"),
        pytest.param(txt(b"=a", b"id=a", b"cluster=b", b"proto=1"), id="empty key"),
        pytest.param(txt(b"id=a", b"cluster=b", b"proto=1", b"k" * 10 + b"=1"), id="long key"),
        pytest.param(GOOD_RAW + b"\x05id", id="truncated"),
        pytest.param(b"\xff" + b"a" * 10, id="length past the end"),
        pytest.param(
            GOOD_RAW + b"".join(txt(b"k%d=1" % n) for n in range(14)), id="too many strings"
        ),
        pytest.param(GOOD_RAW + txt(b"pad=" + b"p" * 250) * 2, id="too large"),
        pytest.param("id=a", id="str"),
        pytest.param(None, id="None"),
    ],
)
def test_parse_txt_refuses(raw: object) -> None:
    with pytest.raises(DecodeError):
        parse_txt(raw)


def test_parse_txt_bounds_the_record_before_reading_it() -> None:
    huge = GOOD_RAW + txt(b"pad=" + b"p" * 250) * 1000
    assert len(huge) > 100 * MAX_TXT_BYTES
    with pytest.raises(DecodeError, match="bytes is over"):
        parse_txt(huge)


# ---- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("169.254.1.2", "169.254.1.2"),
        ("fd00:0:0::1", "fd00::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%2", "fe80::1%2"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_check_address_accepts(address: str, canonical: str) -> None:
    assert check_address(address) == canonical


@pytest.mark.parametrize(
    "address",
    [
        "",
        "host.local",
        "999.1.1.1",
        "10.0.0",
        "10.0.0.1/24",
        "[fd00::1]",
        "fd00::1::2",
        "0.0.0.0",
        "::",
        "224.0.0.251",
        "ff02::fb",
        "127.0.0.1",
        "::1",
        "255.255.255.255",
        "fe80::1",  # link-local without a scope id
    ],
)
def test_check_address_refuses(address: str) -> None:
    with pytest.raises(DecodeError):
        check_address(address)


def test_peer_urls_put_ipv4_first_bracket_ipv6_and_skip_the_rest() -> None:
    addresses = ["fd00::1", "bogus", "10.0.0.2", "fe80::9", "fe80::9%3", "0.0.0.0", "10.0.0.2"]
    assert peer_urls(addresses, 4000) == (
        "http://10.0.0.2:4000",
        "http://[fd00::1]:4000",
        "http://[fe80::9%3]:4000",
    )


def test_peer_urls_are_bounded() -> None:
    addresses = [f"10.0.{n // 250}.{n % 250 + 1}" for n in range(1000)]
    urls = peer_urls(addresses, 1)
    assert len(urls) == MAX_URLS
    assert urls[0] == "http://10.0.0.1:1"


# ---- whole services ----------------------------------------------------------------------


def test_parse_service_reports_a_good_peer() -> None:
    found = parse(info())
    assert found == Discovered(
        node_id="peer-1",
        cluster="blue",
        proto=PROTOCOL_VERSION,
        urls=("http://10.0.0.1:8000", "http://[fd00::1]:8000"),
    )


@pytest.mark.parametrize(
    ("service", "own_id"),
    [
        pytest.param(info(properties={**GOOD_TXT, "cluster": "red"}), "me", id="other cluster"),
        pytest.param(info(properties={**GOOD_TXT, "cluster": "Blue"}), "me", id="cluster cased"),
        pytest.param(
            info(properties={**GOOD_TXT, "proto": str(PROTOCOL_VERSION + 1)}),
            "me",
            id="newer proto",
        ),
        pytest.param(info(properties={**GOOD_TXT, "proto": "0"}), "me", id="proto 0"),
        pytest.param(info(), "peer-1", id="this node"),
    ],
)
def test_parse_service_ignores_foreign_services_and_itself(
    service: ServiceInfo, own_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agentsync.discovery"):
        assert parse(service, own_id) is None
    assert [r.levelno for r in caplog.records if "ignoring" in r.message] == [logging.DEBUG]


@pytest.mark.parametrize(
    "service",
    [
        pytest.param(info(port=0), id="port 0"),
        pytest.param(info(port=None), id="no port"),
        pytest.param(info(port=70000), id="port too large"),
        pytest.param(info(properties={"id": "peer-1", "cluster": "blue"}), id="no proto"),
        pytest.param(info(properties={}), id="no TXT keys"),
        pytest.param(info(properties={**GOOD_TXT, "id": "ünïcode"}), id="non-ASCII id"),
        pytest.param(info(properties={**GOOD_TXT, "proto": "one"}), id="proto not a number"),
        pytest.param(info(properties=GOOD_RAW + txt(b"x=" + b"x" * 250) * 3), id="huge TXT"),
        pytest.param(info(properties=GOOD_RAW + b"\x09trunc"), id="truncated TXT"),
        pytest.param(info(addresses=("0.0.0.0", "::")), id="unspecified addresses"),
        pytest.param(info(addresses=("224.0.0.251",)), id="multicast address"),
        pytest.param(info(addresses=("127.0.0.1", "::1")), id="loopback addresses"),
        pytest.param(info(addresses=("fe80::1",)), id="link-local without scope"),
        pytest.param(info(addresses=()), id="no address"),
        pytest.param(renamed(info(), "x" * 64 + "." + SERVICE_TYPE), id="long instance label"),
        pytest.param(renamed(info(), "peer._http._tcp.local."), id="other type"),
    ],
)
def test_parse_service_drops_and_logs_malformed_records(
    service: ServiceInfo, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agentsync.discovery"):
        assert parse(service) is None
    assert [r.levelno for r in caplog.records if "dropping" in r.message] == [logging.INFO]


@pytest.mark.parametrize(
    ("announced", "ours", "taken"),
    [
        (None, (), True),
        ("a1b2c3d4e5f6", ("a1b2c3d4e5f6",), True),
        ("a1b2c3d4e5f6", ("000000000000", "a1b2c3d4e5f6"), True),  # any installed key
        ("a1b2c3d4e5f6", ("000000000000",), False),  # another key
        (None, ("a1b2c3d4e5f6",), False),  # no key while we have one
        ("a1b2c3d4e5f6", (), False),  # a key while we have none
    ],
)
def test_parse_service_takes_only_peers_announcing_one_of_our_key_fingerprints(
    announced: str | None, ours: tuple[str, ...], taken: bool, caplog: pytest.LogCaptureFixture
) -> None:
    properties = GOOD_TXT if announced is None else {**GOOD_TXT, "keyfp": announced}
    with caplog.at_level(logging.DEBUG, logger="agentsync.discovery"):
        found = parse_service(info(properties=properties), cluster="blue", own_id="me",
                              fingerprints=ours)  # fmt: skip
    assert (found is not None) is taken
    if found is not None:
        assert found.fingerprint == announced
    else:
        assert any("key fingerprint" in r.message for r in caplog.records)


@pytest.mark.parametrize("announced", [False, True])
@pytest.mark.parametrize("ours", [False, True])
def test_parse_service_takes_only_peers_of_its_scheme_and_gives_their_urls_in_it(
    announced: bool, ours: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS node and a plain one cannot talk: each skips the other, and https is announced."""
    properties = {**GOOD_TXT, "tls": "1"} if announced else GOOD_TXT
    with caplog.at_level(logging.DEBUG, logger="agentsync.discovery"):
        found = parse_service(info(properties=properties), cluster="blue", own_id="me", tls=ours)
    if announced != ours:
        assert found is None
        assert any("serves http" in r.message for r in caplog.records)
    else:
        assert found is not None
        scheme = "https://" if ours else "http://"
        assert found.urls and all(url.startswith(scheme) for url in found.urls)


def test_parse_txt_takes_tls_only_as_1() -> None:
    assert parse_txt(GOOD_RAW + txt(b"tls=1"))["tls"] == "1"
    for bad in (b"tls=0", b"tls=", b"tls=yes", b"tls"):
        with pytest.raises(DecodeError):
            parse_txt(GOOD_RAW + txt(bad))


def test_parse_txt_bounds_the_fingerprint() -> None:
    assert parse_txt(GOOD_RAW + txt(b"keyfp=" + b"f" * 64))["keyfp"] == "f" * 64
    with pytest.raises(DecodeError):
        parse_txt(GOOD_RAW + txt(b"keyfp=" + b"f" * 65))
    with pytest.raises(DecodeError):
        parse_txt(GOOD_RAW + txt(b"keyfp="))


def test_parse_service_keeps_the_good_addresses_of_a_mixed_record() -> None:
    found = parse(info(addresses=("127.0.0.1", "fe80::1", "10.1.2.3", "224.0.0.1")))
    assert found is not None
    assert found.urls == ("http://10.1.2.3:8000",)


# ---- the rate gate -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_gate_lets_one_name_through_once_per_interval() -> None:
    clock = Clock()
    gate = ReportGate(interval=1.0, max_names=8, clock=clock)
    assert gate.admit(NAME) == 0.0
    assert gate.admit(NAME) == 1.0  # the next slot is reserved: one second on
    assert gate.admit(NAME.upper()) == 2.0  # DNS names compare case-insensitively
    clock.now += 2.5
    assert gate.admit(NAME) == pytest.approx(0.5)
    clock.now += 10
    assert gate.admit(NAME) == 0.0
    assert gate.admit("other." + SERVICE_TYPE) == 0.0  # names are limited apart


def test_gate_remembers_a_bounded_number_of_names() -> None:
    clock = Clock()
    gate = ReportGate(interval=1.0, max_names=3, clock=clock)
    names = [f"n{n}.{SERVICE_TYPE}" for n in range(10)]
    for name in names:
        assert gate.admit(name) == 0.0
        assert len(gate) <= 3
    assert len(gate) == 3
    assert gate.admit(names[-1]) == 1.0  # still remembered
    assert gate.admit(names[0]) == 0.0  # forgotten: the flood cannot lock it out for good


def test_gate_refuses_bad_limits() -> None:
    with pytest.raises(ValueError):
        ReportGate(interval=-1.0, max_names=1)
    with pytest.raises(ValueError):
        ReportGate(interval=1.0, max_names=0)


# ---- MdnsDiscovery without a network -----------------------------------------------------


def discovery(on_found: Callable[[Discovered], None] | None = None, **kwargs: Any) -> MdnsDiscovery:
    args: dict[str, Any] = {"node_id": "me", "cluster": "blue", "port": 8000}
    return MdnsDiscovery(**{**args, **kwargs}, on_found=on_found or (lambda _: None))


FOUND = Discovered(node_id="peer-1", cluster="blue", proto=1, urls=("http://10.0.0.1:8000",))


class FakeResolver:
    """Stands in for the network: counts resolutions, holds them until released."""

    def __init__(self, result: Discovered | None = FOUND) -> None:
        self.calls: list[tuple[str, float]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.result = result

    async def __call__(self, name: str) -> Discovered | None:
        self.calls.append((name, asyncio.get_running_loop().time()))
        await self.release.wait()
        return self.result


def fire(d: MdnsDiscovery, name: str, change: ServiceStateChange) -> None:
    d._on_change(zeroconf=None, service_type=SERVICE_TYPE, name=name, state_change=change)


async def settle(d: MdnsDiscovery) -> None:
    while d._following:
        await asyncio.sleep(0.01)


def test_events_for_one_name_are_coalesced_and_rate_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mdns, "REPORT_INTERVAL", 0.2)
    reports: list[Discovered] = []
    d = discovery(reports.append)
    resolver = FakeResolver()
    monkeypatch.setattr(d, "_resolve", resolver)

    async def main() -> None:
        for _ in range(50):  # a burst of announcements of one name
            fire(d, NAME, ServiceStateChange.Updated)
            await asyncio.sleep(0)
        await settle(d)

    asyncio.run(main())
    assert len(resolver.calls) == 2  # the first at once, one more for all the rest
    assert resolver.calls[1][1] - resolver.calls[0][1] >= 0.19
    assert reports == [FOUND, FOUND]


def test_removals_are_logged_not_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[Discovered] = []
    d = discovery(reports.append)
    monkeypatch.setattr(d, "_resolve", FakeResolver())
    with caplog.at_level(logging.INFO, logger="agentsync.discovery"):
        fire(d, NAME, ServiceStateChange.Removed)
    assert not d._following
    assert reports == []
    assert "no liveness signal" in caplog.text


def test_bad_names_are_dropped_before_resolving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    d = discovery()
    monkeypatch.setattr(d, "_resolve", FakeResolver())
    with caplog.at_level(logging.INFO, logger="agentsync.discovery"):
        fire(d, "y" * 80 + "." + SERVICE_TYPE, ServiceStateChange.Added)
    assert not d._following
    assert "dropping" in caplog.text


def test_services_followed_at_once_are_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mdns, "MAX_SERVICES", 4)
    reports: list[Discovered] = []
    d = discovery(reports.append)
    resolver = FakeResolver()
    resolver.release.clear()  # every resolution hangs, as a flood of fake names would
    monkeypatch.setattr(d, "_resolve", resolver)

    async def main() -> None:
        for n in range(20):
            fire(d, f"fake-{n}.{SERVICE_TYPE}", ServiceStateChange.Added)
        await asyncio.sleep(0.01)
        assert len(d._following) == 4
        assert len(resolver.calls) == 4
        resolver.release.set()
        await settle(d)
        fire(d, f"late.{SERVICE_TYPE}", ServiceStateChange.Added)  # room again
        await settle(d)

    with caplog.at_level(logging.INFO, logger="agentsync.discovery"):
        asyncio.run(main())
    assert len(reports) == 5
    assert caplog.text.count("resolving already") == 16


def test_a_failing_callback_is_logged_and_does_not_stop_discovery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(found: Discovered) -> None:
        raise RuntimeError("callback bug")

    d = discovery(boom)
    monkeypatch.setattr(d, "_resolve", FakeResolver())

    async def main() -> None:
        fire(d, NAME, ServiceStateChange.Added)
        await settle(d)
        fire(d, "other." + SERVICE_TYPE, ServiceStateChange.Added)
        await settle(d)

    asyncio.run(main())
    assert caplog.text.count("on_found failed") == 2


def test_stop_is_idempotent_and_ends_following(monkeypatch: pytest.MonkeyPatch) -> None:
    d = discovery()
    resolver = FakeResolver()
    resolver.release.clear()
    monkeypatch.setattr(d, "_resolve", resolver)

    async def main() -> None:
        fire(d, NAME, ServiceStateChange.Added)
        await asyncio.sleep(0.01)
        task = next(iter(d._following.values()))
        await d.stop()
        await d.stop()
        assert task.cancelled()
        fire(d, NAME, ServiceStateChange.Added)  # ignored once stopped
        assert not d._following
        with pytest.raises(RuntimeError):
            await d.start()

    asyncio.run(main())


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"port": 0}, id="port 0"),
        pytest.param({"port": 65536}, id="port too large"),
        pytest.param({"node_id": "nöde"}, id="non-ASCII id"),
        pytest.param({"node_id": "n" * 251}, id="id too long"),
        pytest.param({"node_id": "n" * 300}, id="id over a TXT string"),
        pytest.param({"node_id": ""}, id="empty id"),
        pytest.param({"cluster": "c" * (MAX_CLUSTER_CHARS + 1)}, id="cluster too long"),
        pytest.param({"cluster": "blue\n"}, id="control character"),
        pytest.param({"addresses": ["not-an-ip"]}, id="bad address"),
    ],
)
def test_what_peers_would_refuse_is_refused_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        discovery(**kwargs)


def test_instance_names_are_readable_bounded_and_unique() -> None:
    a, b = discovery(node_id="agent/7 east"), discovery(node_id="agent/7 east")
    assert a.name.startswith("agent-7-east-")
    assert a.name != b.name
    long = discovery(node_id="x" * 200)
    check_name(long.name)
    odd = discovery(node_id="///")
    assert odd.name.startswith("agentsync-")


def fake_adapters() -> list[ifaddr.Adapter]:
    def adapter(name: str, index: int, *ips: str | tuple[str, int, int]) -> ifaddr.Adapter:
        return ifaddr.Adapter(name, name, [ifaddr.IP(ip, 24, name) for ip in ips], index)

    return [
        adapter("lo", 1, "127.0.0.1", ("::1", 0, 0)),
        adapter("eth0", 2, ("fe80::2", 0, 2), "10.0.0.2", ("fd00::2", 0, 0)),
        adapter("eth1", 3, "192.168.1.3", "10.0.0.2"),
    ]


@pytest.mark.parametrize(
    ("ip_version", "interfaces", "expected"),
    [
        (IPVersion.All, InterfaceChoice.All, ["10.0.0.2", "192.168.1.3", "fe80::2", "fd00::2"]),
        (IPVersion.V4Only, InterfaceChoice.All, ["10.0.0.2", "192.168.1.3"]),
        (IPVersion.V6Only, InterfaceChoice.Default, ["fe80::2", "fd00::2"]),
        (IPVersion.All, ["192.168.1.3"], ["192.168.1.3", "10.0.0.2"]),
        (IPVersion.All, ["fd00:0::2"], ["10.0.0.2", "fe80::2", "fd00::2"]),
        (IPVersion.V6Only, [2], ["fe80::2", "fd00::2"]),
        (IPVersion.All, [1], []),
    ],
)
def test_local_addresses_leave_out_loopback_and_follow_the_choice(
    monkeypatch: pytest.MonkeyPatch,
    ip_version: IPVersion,
    interfaces: mdns.Interfaces,
    expected: list[str],
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", fake_adapters)
    assert mdns.local_addresses(ip_version, interfaces) == expected


@pytest.mark.parametrize(
    ("ip_version", "expected"),
    [
        (IPVersion.All, [2, "10.0.0.2", "192.168.1.3"]),
        (IPVersion.V4Only, ["10.0.0.2", "192.168.1.3"]),
        (IPVersion.V6Only, [2]),
    ],
)
def test_zeroconf_listens_on_every_interface_but_loopback(
    monkeypatch: pytest.MonkeyPatch, ip_version: IPVersion, expected: list[str | int]
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", fake_adapters)
    assert mdns.listen_interfaces(ip_version) == expected


def test_local_networks_are_those_of_the_interfaces_but_loopback_and_link_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", fake_adapters)
    assert sorted(map(str, mdns.local_networks())) == [
        "10.0.0.0/24", "10.0.0.0/24", "192.168.1.0/24", "fd00::/24"
    ]  # fmt: skip


def test_peer_urls_put_the_addresses_on_this_hosts_networks_first() -> None:
    """A router announces both its subnets; a host on one of them can reach only that one."""
    nets = [ipaddress.ip_network("10.77.1.0/24"), ipaddress.ip_network("fd77:1::/64")]
    addresses = ["10.77.0.3", "fd77:0::3", "fd77:1::3", "10.77.1.3"]
    assert peer_urls(addresses, 7000, nets) == (
        "http://10.77.1.3:7000",
        "http://[fd77:1::3]:7000",
        "http://10.77.0.3:7000",
        "http://[fd77::3]:7000",
    )
    assert peer_urls(addresses, 7000)[0] == "http://10.77.0.3:7000"  # no networks: IPv4 first


# ---- real hosts in network namespaces ----------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 20.0
"""Seconds the processes get to find each other (registering alone takes ~1.6 s)."""

SCRIPT = """
import asyncio, json, logging, sys
from agentsync.discovery.mdns import MdnsDiscovery

def emit(**fields):
    print(json.dumps(fields), flush=True)

class Emit(logging.Handler):
    def emit(self, record):
        emit(event="log", message=record.getMessage())

logging.getLogger("agentsync.discovery").addHandler(Emit())
logging.getLogger("agentsync.discovery").setLevel(logging.DEBUG)

async def main():
    node_id, cluster = sys.argv[1], sys.argv[2]
    found = lambda d: emit(event="found", id=d.node_id, cluster=d.cluster, urls=list(d.urls))
    discovery = MdnsDiscovery(node_id=node_id, cluster=cluster, port=7000, on_found=found)
    await discovery.start()
    emit(event="started", name=discovery.name)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Peer:
    """One discovery process on a host, and what it printed."""

    def __init__(
        self, hosts: Hosts, host: int, node_id: str, cluster: str, *args: str, script: str = SCRIPT
    ) -> None:
        self.node_id = node_id
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        proc = hosts.run(
            host,
            [sys.executable, "-c", script, node_id, cluster, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        self.proc = proc
        self.lines = Lines(proc.stdout)

    def events(self, kind: str) -> list[dict[str, Any]]:
        events = []
        for line in self.lines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == kind:
                events.append(event)
        return events

    def found(self) -> dict[str, list[str]]:
        return {event["id"]: event["urls"] for event in self.events("found")}

    def logged(self, text: str) -> bool:
        return any(text in event["message"] for event in self.events("log"))


def wait_for(condition: Callable[[], bool], peers: list[Peer], what: str) -> None:
    if not wait_until(condition, DEADLINE):
        output = "\n".join(f"--- {p.node_id}\n" + "\n".join(p.lines()) for p in peers)
        pytest.fail(f"timed out after {DEADLINE} s waiting for {what}\n{output}")


@pytest.mark.netns
def test_three_hosts_find_each_other_and_not_another_cluster(
    netns_hosts: Callable[..., Hosts],
) -> None:
    hosts = netns_hosts(4)
    blue = [Peer(hosts, i, f"n{i}", "blue") for i in (1, 2, 3)]
    red = Peer(hosts, 4, "n4", "red")
    everyone = [*blue, red]

    def done() -> bool:
        return all(
            set(p.found()) == {q.node_id for q in blue} - {p.node_id}
            # the red service reached p, and p refused it
            and p.logged("node 'n4', cluster 'red'")
            for p in blue
        ) and red.logged("node 'n1', cluster 'blue'")

    wait_for(done, everyone, "each blue node to find the other two and refuse the red one")
    for p in blue:
        for i, url_list in p.found().items():
            host = int(i[1:])
            assert url_list[0] == f"http://{hosts.addr(host)}:7000"  # IPv4 first
            assert f"http://[{hosts.addr6(host)}]:7000" in url_list
        assert "n4" not in p.found()
    assert red.found() == {}
    assert all(p.proc.poll() is None for p in everyone)


@pytest.mark.netns
def test_hosts_on_two_bridges_meet_only_the_router(netns_hosts: Callable[..., Hosts]) -> None:
    hosts = netns_hosts(2, 2, router=True)
    router = hosts.router
    assert router == 5
    peers = {i: Peer(hosts, i, f"n{i}", "blue") for i in range(1, 6)}
    expected = {
        i: {
            f"n{j}" for j in range(1, 6) if j != i and set(hosts.bridges(i)) & set(hosts.bridges(j))
        }
        for i in peers
    }
    assert expected[1] == {"n2", "n5"}
    assert expected[3] == {"n4", "n5"}
    assert expected[5] == {"n1", "n2", "n3", "n4"}

    def done() -> bool:
        return all(set(peers[i].found()) >= expected[i] for i in peers)

    wait_for(done, list(peers.values()), "the hosts of each bridge and the router to meet")
    for i, peer in peers.items():
        assert set(peer.found()) == expected[i]
        for other in {"n1", "n2", "n3", "n4"} - expected[i] - {f"n{i}"}:
            assert not peer.logged(f"node '{other}'"), f"n{i} heard of {other} across bridges"
    seen = peers[5].found()
    assert seen["n1"][0] == f"http://{hosts.addr(1)}:7000"
    assert seen["n3"][0] == f"http://{hosts.addr(3)}:7000"
    assert hosts.addr(1).rsplit(".", 1)[0] != hosts.addr(3).rsplit(".", 1)[0]  # two subnets


KEYED_SCRIPT = """
import asyncio, json, sys
from agentsync.discovery.mdns import MdnsDiscovery
from agentsync.security import Keyring

async def main():
    node_id, cluster, secret, later = sys.argv[1:5]
    ring = Keyring(secret.encode() * 4, cluster=cluster) if secret != "-" else None
    found = lambda d: print(json.dumps({"event": "found", "id": d.node_id, "urls": d.urls}),
                            flush=True)
    discovery = MdnsDiscovery(
        node_id=node_id, cluster=cluster, port=7000, on_found=found,
        fingerprint=ring.primary.fingerprint if ring else None,
        fingerprints=(lambda: ring.fingerprints) if ring else None,
    )
    await discovery.start()
    print(json.dumps({"event": "started"}), flush=True)
    if later != "-":  # a rotation: install and use another key, then announce it
        ring.install(later.encode() * 4)
        ring.use(later.encode() * 4)
        discovery.announce(ring.primary.fingerprint)
        print(json.dumps({"event": "rotated"}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def keyed(hosts: Hosts, host: int, secret: str, later: str = "-") -> Peer:
    """A discovery process with a key (its secret is ``secret`` * 4, or none for "-")."""
    return Peer(hosts, host, f"n{host}", "blue", secret, later, script=KEYED_SCRIPT)


@pytest.mark.netns
def test_peers_with_another_key_or_none_are_skipped_until_they_announce_ours(
    netns_hosts: Callable[..., Hosts],
) -> None:
    """n1 and n2 share key A; n3 has none; n4 has key B, then rotates to A and re-announces."""
    hosts = netns_hosts(4)
    peers = [keyed(hosts, 1, "aaaa"), keyed(hosts, 2, "aaaa"), keyed(hosts, 3, "-"),
             keyed(hosts, 4, "bbbb", later="aaaa")]  # fmt: skip
    n1, n2, n3, n4 = peers
    wait_for(lambda: "n2" in n1.found() and "n1" in n2.found(), peers, "n1 and n2 to meet")
    wait_for(lambda: bool(n4.events("rotated")), peers, "n4 to rotate to key A")
    wait_for(lambda: "n4" in n1.found() and "n4" in n2.found(), peers, "n4's new record")
    assert "n3" not in n1.found()
    assert "n3" not in n2.found()
    assert set(n3.found()) == set()  # keyed peers are not taken by a node without a key
    assert "n3" not in n4.found()
    assert all(p.proc.poll() is None for p in peers)


STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(60)
"""


@pytest.mark.netns
def test_teardown_kills_processes_and_deletes_namespaces_even_on_failure() -> None:
    require_netns()
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        make_hosts(1, 1, router=True) as hosts,
    ):
        prefix = hosts.prefix
        assert sum(ns.startswith(prefix) for ns in netns_list()) == 5  # 3 hosts, 2 bridges
        hosts.term_timeout = 0.3
        # it ignores SIGTERM, so it takes the SIGKILL
        stubborn = hosts.run(3, [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline() == "up\n"
        raise RuntimeError("test body failed")
    assert stubborn.returncode == -9
    assert [ns for ns in netns_list() if ns.startswith(prefix)] == []


REACH = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=5).close()
except ConnectionRefusedError:
    pass  # refused by the host itself: reached
"""


def reached(hosts: Hosts, i: int, address: str) -> bool:
    """Whether host ``i`` reaches ``address`` (a TCP connection to it is answered)."""
    argv = ["ip", "netns", "exec", hosts.ns(i), sys.executable, "-c", REACH, address]
    return subprocess.run(argv, capture_output=True, timeout=15, check=False).returncode == 0


@pytest.mark.netns
def test_the_router_joins_bridges_and_cut_and_heal_set_links_down_and_up() -> None:
    require_netns()
    with make_hosts(1, 1, router=True) as hosts:

        def state(i: int, bridge: int) -> str:
            out = subprocess.run(
                ["ip", "-n", hosts.ns(i), "-br", "link", "show", f"eth{bridge}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return out.split()[1]

        for src, dst in ((1, 2), (2, 1)):  # across bridges, through the router
            for address in (hosts.addr(dst), hosts.addr6(dst)):
                assert reached(hosts, src, address), f"host {src} cannot reach {address}"
        hosts.cut(3, bridge=1)
        assert (state(3, 0), state(3, 1)) == ("UP", "DOWN")
        hosts.cut(3)
        assert (state(3, 0), state(3, 1)) == ("DOWN", "DOWN")
        hosts.heal(3)
        assert {state(3, 0), state(3, 1)} <= {"UP", "UNKNOWN", "LOWERLAYERDOWN"}
        assert state(3, 0) == "UP"
        with pytest.raises(ValueError):
            hosts.addr(1, bridge=1)
        with pytest.raises(IndexError):
            hosts.ns(4)


def test_without_namespaces_tests_skip_but_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(netns, "unavailable_reason", lambda: "no namespaces here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no namespaces here"):
        netns.require_netns()
    assert "no namespaces here" in capsys.readouterr().out
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        netns.require_netns()
