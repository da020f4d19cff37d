"""Peer base URLs: one canonical spelling, so that backoff is kept per peer.

A peer's URL comes from configuration, seeds or discovery, all outside this
process, so it is checked before any request goes out.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_HOSTNAME_CHARS = 253
_MAX_URL_CHARS = 2048


def normalize_url(url: str) -> str:
    """The canonical ``scheme://host[:port]`` of a peer base URL; ValueError if it is not one.

    Accepted: http or https, a host name, IPv4 address or bracketed IPv6
    address, an optional port, and at most a bare "/" after it. Scheme and
    host are lowercased and a trailing "/" is dropped.
    """
    if not isinstance(url, str):
        raise ValueError(f"a peer URL is a str, not {type(url).__name__}")
    if not 0 < len(url) <= _MAX_URL_CHARS or not url.isprintable() or " " in url:
        raise ValueError(f"peer URL {url[:80]!r} is empty, too long or has spaces")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced or misused brackets
        raise ValueError(f"peer URL {url!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"peer URL {url!r} must start with http:// or https://")
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        raise ValueError(f"peer URL {url!r} may not have a path, query or fragment")
    if "@" in parts.netloc:
        raise ValueError(f"peer URL {url!r} may not carry user info")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"peer URL {url!r} has a bad port: {exc}") from None
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"peer URL {url!r} has a bad port")
    host = _host(parts.netloc, parts.hostname or "", url)
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def _host(netloc: str, hostname: str, url: str) -> str:
    if netloc.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(hostname).compressed}]"
        except ValueError:
            raise ValueError(f"peer URL {url!r} has a bad IPv6 address") from None
    if len(hostname) > _MAX_HOSTNAME_CHARS or not _HOSTNAME.fullmatch(hostname):
        raise ValueError(f"peer URL {url!r} has no valid host")
    if hostname.replace(".", "").isdigit():  # all digits: it must be an IPv4 address
        try:
            ipaddress.IPv4Address(hostname)
        except ValueError:
            raise ValueError(f"peer URL {url!r} has a bad IPv4 address") from None
    return hostname


def base_url(host: str, port: int, *, tls: bool = False) -> str:
    """The URL of a bound address (IPv6 hosts bracketed): https for a TLS server."""
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _ip(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return None


def is_loopback(url: str) -> bool:
    """Whether a base URL names this host's loopback (``localhost`` or a loopback address)."""
    ip = _ip(url)
    return urlsplit(url).hostname == "localhost" if ip is None else ip.is_loopback


def is_wildcard(url: str) -> bool:
    """Whether a base URL names an unspecified address (``0.0.0.0`` or ``[::]``), as a bind does."""
    ip = _ip(url)
    return ip is not None and ip.is_unspecified


def at_address(url: str, address: str) -> str:
    """``url`` with its host replaced by the IP ``address`` (ValueError if it is not one).

    An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4
    peer) becomes the IPv4 address.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    host = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return normalize_url(f"{parts.scheme}://{host}{port}")
