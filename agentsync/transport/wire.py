"""What the server and the client agree on over HTTP, and the bounded body read.

Both sides read bodies from untrusted peers, so both use ``read_bounded``:
it stops at a byte limit whatever Content-Length says, chunked bodies
included. The time bound is the caller's (``body_timeout`` on the server,
the client's total timeout).
"""

from __future__ import annotations

import aiohttp
from multidict import MultiMapping

MSGPACK = "application/x-msgpack"
"""The content type of sync requests and responses."""
SEALED = "application/x-agentsync-sealed"
"""The content type of sync bodies in an envelope (``agentsync.security``), when the
cluster has a secret: a node with a secret refuses plain bodies and one without
refuses sealed ones, each saying so, rather than failing to decode them."""
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""

SYNC_PATH = "/v1/sync"
HEALTH_PATH = "/v1/health"
STATE_PATH = "/v1/state"
METRICS_PATH = "/metrics"
STATUS_PATH = "/v1/status"
"""What the status page (``GET /``) polls: ``agentsync.status.report``'s JSON."""

DEFAULT_MAX_BODY_BYTES = (1 << 20) + (16 << 10)
"""The sync engine's 1 MiB message bound plus room, so every message it composes fits."""

MAX_REASON_CHARS = 300
"""The longest error reason sent in a response or quoted from one."""


class BodyTooLargeError(Exception):
    """A body went past its byte limit; the rest of it was not read."""


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Read a body to its end, never holding more than ``limit`` + 1 bytes of it."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:  # every pass reads at least one byte or returns
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    raise BodyTooLargeError(f"body larger than {limit} bytes")


def identity_encoded(headers: MultiMapping[str]) -> bool:
    """True unless a Content-Encoding header names a coding: compressed bodies are refused."""
    codings = ",".join(headers.getall("Content-Encoding", ())).lower().split(",")
    return all(coding.strip() in ("", "identity") for coding in codings)


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` made safe to quote in a log line or an error: printable, one line, bounded."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text[: limit + 1]).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
