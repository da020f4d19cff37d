"""The admission rules alone: per-address and total caps on connections and requests."""

from __future__ import annotations

import pytest

from agentsync.transport.limits import Gate, Limits, Refusal, remote_key


def test_an_address_over_its_cap_gets_429_and_others_still_get_in() -> None:
    gate = Gate(Limits(requests_per_remote=2))
    assert gate.begin("10.0.0.1") is None
    assert gate.begin("10.0.0.1") is None
    refusal = gate.begin("10.0.0.1")
    assert refusal == Refusal(429, "too many requests in flight from this address (at most 2)")
    assert gate.begin("10.0.0.2") is None
    assert (gate.requests("10.0.0.1"), gate.requests("10.0.0.2"), gate.in_flight) == (2, 1, 3)
    gate.end("10.0.0.1")
    assert gate.begin("10.0.0.1") is None, "a finished request frees its slot"


def test_a_full_server_gets_503_whoever_asks() -> None:
    gate = Gate(Limits(connections=3, connections_per_remote=2))
    assert [gate.connect(ip) for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2")] == [None] * 3
    refusal = gate.connect("10.0.0.3")
    assert refusal is not None and refusal.status == 503
    assert refusal.reason == "too many connections (at most 3); try again later"
    over = gate.connect("10.0.0.1")
    assert over is not None and over.status == 429, "the address's own cap is named first"
    gate.disconnect("10.0.0.2")
    assert gate.connect("10.0.0.3") is None
    assert gate.open_connections == 3


def test_refusals_count_nothing_and_idle_addresses_are_forgotten() -> None:
    gate = Gate(Limits(connections_per_remote=1, requests_per_remote=1))
    for n in range(1000):
        ip = f"10.0.{n // 256}.{n % 256}"
        assert gate.connect(ip) is None and gate.begin(ip) is None
        assert gate.connect(ip) is not None and gate.begin(ip) is not None
        gate.end(ip)
        gate.disconnect(ip)
    assert (gate.open_connections, gate.in_flight) == (0, 0)
    assert not gate._connections.held and not gate._requests.held, "memory: only what is held"


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.168.1.7", "192.168.1.7"),
        ("::ffff:192.168.1.7", "192.168.1.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, ""),
        ("/run/agentsync.sock", ""),
    ],
)
def test_remotes_are_counted_per_ipv4_address_and_per_ipv6_64(host: str | None, key: str) -> None:
    assert remote_key(host) == key


@pytest.mark.parametrize(
    "options",
    [{"connections": 0}, {"requests_per_remote": -1}, {"requests": 1.5}, {"retry_after": -1}],
)
def test_bad_limits_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        Limits(**options)  # type: ignore[arg-type]
