"""normalize_url: which peer URLs are accepted, their canonical form, and what is refused."""

from __future__ import annotations

import pytest

from agentsync.transport import normalize_url
from agentsync.transport.client import normalize_url as from_client
from agentsync.transport.urls import at_address, base_url, is_loopback, is_wildcard


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("HTTP://Agent-A.Local:7000/", "http://agent-a.local:7000"),
        ("https://peer.example.com", "https://peer.example.com"),
        ("http://localhost", "http://localhost"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://[0:0:0:0:0:0:0:1]:9000/", "http://[::1]:9000"),
        ("http://edge_7:80", "http://edge_7:80"),
        ("http://host:0065535", "http://host:65535"),
    ],
)
def test_accepted_urls_take_one_canonical_form(url: str, canonical: str) -> None:
    assert normalize_url(url) == canonical
    assert normalize_url(canonical) == canonical


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("127.0.0.1:8080", "http"),
        ("ftp://host:21", "http"),
        ("http://host:8080/v1/sync", "path"),
        ("http://host:8080?x=1", "query"),
        ("http://host:8080/?", "query"),
        ("http://host:8080#frag", "fragment"),
        ("http://user:pw@host:8080", "user info"),
        ("http://host:0", "port"),
        ("http://host:65536", "port"),
        ("http://host:http", "port"),
        ("http://host:", "port"),
        ("http://:8080", "host"),
        ("http://", "host"),
        ("http://ho st:1", "spaces"),
        ("http://host\n:1", "spaces"),
        ("http://-bad-.example", "host"),
        ("http://a..b", "host"),
        ("http://" + "a" * 64 + ".example", "host"),
        ("http://" + "a." * 130 + "b", "host"),
        ("http://999.1.1.1", "IPv4"),
        ("http://[::zz]:1", "IPv6"),
        ("http://[127.0.0.1]:1", "malformed"),
        ("http://[::1:1", "malformed"),
        ("http://" + "a" * 3000, "too long"),
    ],
)
def test_refused_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_url(url)


def test_a_non_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="str"):
        normalize_url(b"http://host:1")  # type: ignore[arg-type]


def test_the_client_module_offers_the_same_function() -> None:
    assert from_client is normalize_url


def test_server_urls_bracket_ipv6_hosts() -> None:
    assert base_url("127.0.0.1", 80) == "http://127.0.0.1:80"
    assert base_url("::1", 80) == "http://[::1]:80"
    assert base_url("::1", 443, tls=True) == "https://[::1]:443"
    assert normalize_url(base_url("::1", 80)) == "http://[::1]:80"


@pytest.mark.parametrize(
    ("url", "loopback", "wildcard"),
    [
        ("http://127.0.0.1:7000", True, False),
        ("http://127.9.9.9", True, False),
        ("http://[::1]:7000", True, False),
        ("http://localhost:7000", True, False),
        ("http://0.0.0.0:7000", False, True),
        ("http://[::]:7000", False, True),
        ("http://10.1.2.3:7000", False, False),
        ("http://[fd00::1]:7000", False, False),
        ("http://agent-a.local:7000", False, False),
    ],
)
def test_loopback_and_wildcard_urls_are_told_apart(
    url: str, loopback: bool, wildcard: bool
) -> None:
    assert (is_loopback(url), is_wildcard(url)) == (loopback, wildcard)


def test_at_address_swaps_the_host_and_unmaps_ipv4() -> None:
    assert at_address("http://0.0.0.0:7000", "10.1.2.3") == "http://10.1.2.3:7000"
    assert at_address("http://[::]:7000", "fd00::1") == "http://[fd00::1]:7000"
    assert at_address("http://[::]:7000", "::ffff:10.1.2.3") == "http://10.1.2.3:7000"
    assert at_address("https://0.0.0.0", "10.1.2.3") == "https://10.1.2.3"
    with pytest.raises(ValueError):
        at_address("http://0.0.0.0:7000", "not-an-ip")
