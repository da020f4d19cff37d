"""The HTTP client of a node: one shared session for every exchange with its peers.

Every peer is untrusted and may be slow or dead, so each request has a
total and a connect timeout, reply bodies are read with a size bound and
never inflated, and concurrency is bounded across all peers. Failures put
the peer into exponential backoff with full jitter; the caller asks
``ready`` before picking a peer. Requests run concurrently, so a peer that
never answers holds one slot until its timeout and delays no other peer.
The wait for a free slot counts neither against the timeout nor against the
peer: it is this node's own queue. With a ``Channel`` (a cluster secret)
every request is sealed and every reply must open as the answer to it. With
an ``ssl`` context (``transport.tls``), https peers are reached with its CAs,
client certificate and pins; with ``bind_node_ids`` too, a reply is bound to
the node id its server's certificate names.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from ssl import SSLContext
from typing import Any

import aiohttp
from aiohttp.connector import Connection

from agentsync.errors import AuthenticationError, PeerUnavailableError
from agentsync.security import Channel
from agentsync.transport.backoff import PeerBackoff
from agentsync.transport.tls import certified_node_id
from agentsync.transport.urls import normalize_url
from agentsync.transport.wire import (
    DEFAULT_MAX_BODY_BYTES,
    MSGPACK,
    SEALED,
    SYNC_PATH,
    BodyTooLargeError,
    identity_encoded,
    one_line,
    read_bounded,
)

__all__ = ["SyncClient", "normalize_url"]

KEEPALIVE_TIMEOUT = 5.0
"""Seconds an idle pooled connection is kept: less than the server's, so it never
closes a connection just as a request goes out on it."""
_REASON_BYTES = 1024
"""How much of an error response is read, to quote the server's reason."""


class SyncClient:
    """Sync exchanges and JSON reads against peers, with per-peer backoff."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_concurrency: int = 16,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        channel: Channel | None = None,
        ssl: SSLContext | None = None,
        bind_node_ids: bool = False,
    ) -> None:
        if timeout <= 0 or max_concurrency < 1 or max_body_bytes < 1:
            raise ValueError("timeout, max_concurrency and max_body_bytes must be positive")
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._max_body_bytes = max_body_bytes
        self._backoff = PeerBackoff(backoff_base, backoff_max, rng or random.Random(), clock)
        self._channel = channel
        self._ssl = ssl
        if bind_node_ids and ssl is None:
            raise ValueError("bind_node_ids needs ssl: node ids are read from certificates")
        self._bind_node_ids = bind_node_ids
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        """Open the shared session (it binds to the running event loop)."""
        if self._session is not None:
            raise RuntimeError("the sync client is already started")
        self._slots = asyncio.Semaphore(self._max_concurrency)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_concurrency,
                keepalive_timeout=KEEPALIVE_TIMEOUT,
                ssl=True if self._ssl is None else self._ssl,  # https: verified either way
            ),
            # The connect budget includes the wait for a pooled connection.
            timeout=aiohttp.ClientTimeout(total=self._timeout, connect=self._timeout / 2),
            auto_decompress=False,  # a peer's compressed reply is refused, not inflated
            cookie_jar=aiohttp.DummyCookieJar(),
            response_class=_CertifiedResponse if self._bind_node_ids else aiohttp.ClientResponse,
        )

    async def close(self) -> None:
        """Close the session and its connections; a no-op when not started."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def exchange(self, url: str, body: bytes) -> bytes:
        """POST a sync request to ``url``; its 200 reply body (see ``exchange_from``)."""
        return (await self.exchange_from(url, body))[0]

    async def exchange_from(self, url: str, body: bytes) -> tuple[bytes, str | None]:
        """POST a sync request to the peer at ``url``; its 200 reply body, and who sent it.

        Who sent it is the node id in the reply's envelope with a channel,
        the one the server's certificate names with ``bind_node_ids`` (both:
        they must agree), else None: the message inside must name it.
        PeerUnavailableError if
        the peer cannot be reached, times out, or answers with anything but
        a bounded msgpack 200 (sealed, with a channel, and authentic; from
        a certificate that names one node id, with ``bind_node_ids``).
        Either way the outcome feeds the peer's backoff; a cancelled
        exchange does not. ValueError, with no request sent, if ``body`` is
        larger than a peer accepts.
        """
        peer = normalize_url(url)
        if len(body) > self._max_body_bytes:
            raise ValueError(f"a body of {len(body)} bytes exceeds {self._max_body_bytes}")
        channel = self._channel
        kind = MSGPACK if channel is None else SEALED
        headers = {"Content-Type": kind, "Accept": kind, "Accept-Encoding": "identity"}
        request, sealer = b"", None
        if channel is not None:
            body, request = channel.seal_request(body)
        try:
            reply, certified = await self._request(
                "POST", peer + SYNC_PATH, body=body, headers=headers, content_type=kind
            )
            if channel is not None:
                reply, sealer = _opened(channel, reply, request, peer)
            if self._bind_node_ids:
                sealer = _bound(certified, sealer, peer)
        except PeerUnavailableError:
            self._backoff.failure(peer)
            raise
        self._backoff.success(peer)
        return reply, sealer

    async def get_json(self, url: str, path: str, *, token: str | None = None) -> Any:
        """GET a JSON document from a peer (status, dumps, tests); no effect on backoff.

        ``token`` is sent as ``Authorization: Bearer``: a node with a secret
        serves its state and metrics only to the cluster key's token.
        """
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'")
        peer = normalize_url(url)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data, _ = await self._request(
            "GET", peer + path, body=None, headers=headers, content_type=None
        )
        try:
            return json.loads(data)
        except ValueError as exc:
            raise PeerUnavailableError(f"{peer}{path}: reply is not JSON: {exc}") from None

    def ready(self, url: str) -> bool:
        """False while the peer at ``url`` is backing off after failures."""
        return self._backoff.ready(normalize_url(url))

    def backoff_remaining(self, url: str) -> float:
        """Seconds until the peer at ``url`` may be tried again."""
        return self._backoff.remaining(normalize_url(url))

    def failures(self, url: str) -> int:
        """Consecutive failed exchanges with the peer at ``url``."""
        return self._backoff.failures(normalize_url(url))

    async def _request(
        self,
        method: str,
        where: str,
        *,
        body: bytes | None,
        headers: dict[str, str],
        content_type: str | None,
    ) -> tuple[bytes, str | None]:
        """One bounded request; its 200 body, or PeerUnavailableError saying why not.

        With ``bind_node_ids``, the node id the server's certificate names
        comes with the body (None if it names none or several).
        """
        if self._session is None or self._slots is None:
            raise RuntimeError("the sync client is not started")
        try:
            async with (
                self._slots,
                self._session.request(method, where, data=body, headers=headers) as response,
            ):
                certified = getattr(response, "certified", None)
                return await self._read(response, where, content_type), certified
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if isinstance(exc, asyncio.TimeoutError):  # aiohttp's timeouts are ones too
                reason = f"timed out after {self._timeout:g} s"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            raise PeerUnavailableError(f"{where}: {one_line(reason)}") from None

    async def _read(
        self, response: aiohttp.ClientResponse, where: str, content_type: str | None
    ) -> bytes:
        if response.status != 200:
            text = (await response.content.read(_REASON_BYTES)).decode("utf-8", "replace")
            raise PeerUnavailableError(
                f"{where}: HTTP {response.status}: {one_line(text)}", response.status
            )
        if not identity_encoded(response.headers):
            raise PeerUnavailableError(f"{where}: reply is compressed, which is not accepted")
        if content_type is not None and response.content_type != content_type:
            raise PeerUnavailableError(
                f"{where}: reply is {response.content_type}, not {content_type}"
            )
        limit = self._max_body_bytes
        if response.content_length is not None and response.content_length > limit:
            raise PeerUnavailableError(f"{where}: reply larger than {limit} bytes")
        try:
            return await read_bounded(response.content, limit)
        except BodyTooLargeError:
            raise PeerUnavailableError(f"{where}: reply larger than {limit} bytes") from None


class _CertifiedResponse(aiohttp.ClientResponse):
    """A response that keeps the node id its server's certificate names.

    It is read as the response starts: by the time its body is read, aiohttp
    may have put the connection back in its pool.
    """

    certified: str | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        self.certified = certified_node_id(peercert)
        return await super().start(connection)


def _bound(certified: str | None, sealer: str | None, peer: str) -> str:
    """The node id a reply comes from when node ids are bound to certificates: the one
    its server's certificate names, which its envelope (if any) must name too."""
    if certified is None:
        raise PeerUnavailableError(
            f"{peer}{SYNC_PATH}: reply refused: the server's certificate names no node id "
            "(or several)"
        )
    if sealer is not None and sealer != certified:
        raise PeerUnavailableError(
            f"{peer}{SYNC_PATH}: reply refused: sealed by {sealer!r}, but the server's "
            f"certificate names {certified!r}"
        )
    return certified


def _opened(channel: Channel, data: bytes, request: bytes, peer: str) -> tuple[bytes, str]:
    """The body of a sealed reply to ``request`` and its sealer; PeerUnavailableError if
    it is not authentic."""
    try:
        body, header = channel.open_response(data, request)
    except AuthenticationError as exc:
        raise PeerUnavailableError(f"{peer}{SYNC_PATH}: reply refused: {exc}") from None
    return body, header.sender
