"""The HTTP server of a node: sync exchanges in; health, state, metrics and status out.

It moves bytes and refuses hostile input before the handler sees it: bodies
are read with a size and a time bound, compressed bodies and wrong content
types are refused, and an unexpected exception becomes a 500, never a crash.
A flood is refused before any body is read: each connection and each
request must pass the ``limits.Gate`` (per remote address and in total), or
is answered 429 or 503 with a ``Retry-After`` and closed.
With a ``Channel`` (a cluster secret), a sync body is opened and checked
before the handler sees a byte of it, and anything unauthenticated gets a
401: a plain body, a failed envelope, a replay, or a read of the state,
status or metrics without the key's bearer token. Health then says only
"alive", and the status page (``page.py``) asks for the token.
With an ``ssl`` context (``transport.tls``) it serves https: the TLS
handshake starts only once the gate admitted the connection, is bounded in
time, and a failed one (plain http, no or a wrong client certificate, a
certificate not pinned) is counted and closed before a byte is read. With
``bind_node_ids`` too, a sync request is handled only as coming from the
node id its client certificate names: one that names none gets a 403 before
its body is read, and the handler refuses a message naming another sender.
The handler (the Node) does the protocol work, synchronously: it is CPU
work with no await inside, so it runs on the event loop, one call at a time.
"""

from __future__ import annotations

import asyncio
import logging
from ssl import CERT_REQUIRED, SSLContext
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agentsync.errors import (
    AccessDeniedError,
    AuthenticationError,
    ClusterMismatchError,
    DecodeError,
    ProtocolError,
)
from agentsync.security import Channel
from agentsync.transport.limits import Gate, Limits, Refusal, Turns, remote_key
from agentsync.transport.page import PAGE, PAGE_HEADERS
from agentsync.transport.tls import certified_node_id
from agentsync.transport.urls import base_url
from agentsync.transport.wire import (
    DEFAULT_MAX_BODY_BYTES,
    HEALTH_PATH,
    METRICS_CONTENT_TYPE,
    METRICS_PATH,
    MSGPACK,
    SEALED,
    STATE_PATH,
    STATUS_PATH,
    SYNC_PATH,
    BodyTooLargeError,
    identity_encoded,
    one_line,
    read_bounded,
)

logger = logging.getLogger("agentsync.transport")

KEEPALIVE_TIMEOUT = 15.0
"""Seconds an idle connection (or one still sending its headers) is kept open."""
LINGERING_TIME = 1.0
"""Seconds the unread rest of a refused body is drained, so the client sees the refusal."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds ``stop`` gives requests in flight before cancelling them."""
TLS_HANDSHAKE_TIMEOUT = 10.0
"""Seconds an admitted connection has to finish its TLS handshake."""


class SyncHandler(Protocol):
    """What the server calls; the Node implements it. Every method is synchronous."""

    def handle_sync(
        self,
        body: bytes,
        remote: str | None = None,
        sender: str | None = None,
        certified: str | None = None,
    ) -> bytes:
        """Answer a sync request body with a response body.

        ``remote`` is the IP address the request came from (None if unknown),
        ``sender`` the node id that sealed it (None when unsealed): the
        message must name the same sender. ``certified`` is the node id the
        client's certificate names when the server binds node ids
        (``bind_node_ids``; None otherwise): the message must name it too, or
        ImpersonationError. Raise DecodeError or ProtocolError (400),
        AccessDeniedError (403; ImpersonationError is one) or
        ClusterMismatchError (409), with state unchanged, to refuse it.
        """
        ...

    def health(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/health``."""
        ...

    def state_json(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/state``."""
        ...

    def metrics_text(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        ...

    def status_json(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/status``, which the status page polls."""
        ...

    def count_error(self) -> None:
        """Count one request the transport refused itself.

        That is 401, 404, 405, 408, 413, 415, a body cut short by a lost
        connection, 500, and a connection or request over the limits (429,
        503). Refusals the handler raised (400, 409) are not reported here.
        """
        ...

    def count_auth_failure(self) -> None:
        """Count one request refused with 401 (``count_error`` counts it too)."""
        ...


_REMOTE_KEY = web.RequestKey("agentsync.remote_key", str)
"""Where the guard leaves a request's ``limits.remote_key``, computed once per request."""


class _Refused(Exception):
    """A request the transport answers with an error status and a one-line reason."""

    def __init__(self, status: int, reason: str, *, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close
        """Drop the connection after answering: its body was not read to the end."""


class SyncServer:
    """One node's HTTP endpoint; ``start`` binds it and ``stop`` shuts it down."""

    def __init__(
        self,
        handler: SyncHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout: float = 10.0,
        access_log: bool = False,
        limits: Limits | None = None,
        channel: Channel | None = None,
        ssl: SSLContext | None = None,
        bind_node_ids: bool = False,
    ) -> None:
        if max_body_bytes < 1 or body_timeout <= 0:
            raise ValueError("max_body_bytes and body_timeout must be positive")
        if bind_node_ids and (ssl is None or ssl.verify_mode != CERT_REQUIRED):
            raise ValueError("bind_node_ids needs an ssl context that requires client certificates")
        self._bind_node_ids = bind_node_ids
        self._handler = handler
        self._host = host
        self._port = port
        self._max_body_bytes = max_body_bytes
        self._body_timeout = body_timeout
        self._access_log = access_log
        self._channel = channel
        self._ssl = ssl
        self.gate = Gate(limits)
        """What each remote address holds now, and the limits it is held to."""
        self._turns = Turns()
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    @property
    def url(self) -> str:
        """The base URL peers reach this server at (while it runs)."""
        return base_url(self._host, self.port, tls=self._ssl is not None)

    @property
    def port(self) -> int:
        """The bound port (while it runs): the one picked when ``port`` was 0."""
        if self._bound_port is None:
            raise RuntimeError("the sync server is not running")
        return self._bound_port

    async def start(self) -> None:
        """Bind and serve; OSError if the address is taken."""
        if self._runner is not None:
            raise RuntimeError("the sync server is already running")
        access_log = logging.getLogger("agentsync.transport.access") if self._access_log else None
        runner = web.AppRunner(
            self._app(),
            access_log=access_log,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            lingering_time=LINGERING_TIME,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            site = _GatedSite(
                runner, self._host, self._port, self.gate, self._handler, ssl=self._ssl
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        logger.debug("sync server listening on %s", self.url)

    async def stop(self) -> None:
        """Stop serving and close every connection; a no-op when not running."""
        runner, self._runner, self._bound_port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
            await self._turns.close()

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body_bytes, middlewares=[self._guard()])
        app.router.add_post(SYNC_PATH, self._sync)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(STATE_PATH, self._state)
        app.router.add_get(METRICS_PATH, self._metrics)
        app.router.add_get("/", self._page)
        app.router.add_get(STATUS_PATH, self._status)
        return app

    def _guard(self) -> Middleware:
        """The middleware that turns every refusal and bug into a counted error response."""

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            remote = remote_key(request.remote)
            refusal = self.gate.begin(remote)
            if refusal is not None:  # before the body is read: refusing is cheap here
                response = self._refusal(request, refusal.status, refusal.reason, close=True)
                response.headers["Retry-After"] = str(self.gate.limits.retry_after)
                return response
            request[_REMOTE_KEY] = remote
            try:
                return await handler(request)
            except _Refused as refused:
                return self._refusal(request, refused.status, refused.reason, refused.close)
            except web.HTTPException:  # the router's 404 and 405
                self._handler.count_error()
                raise
            except Exception:
                where = one_line(request.raw_path)
                logger.exception("unexpected error serving %s %s", request.method, where)
                return self._refusal(request, 500, "internal server error", close=False)
            finally:
                self.gate.end(remote)

        return guard

    def _refusal(self, request: web.Request, status: int, reason: str, close: bool) -> web.Response:
        """A counted error response with its one-line reason."""
        self._handler.count_error()
        where = one_line(request.raw_path)  # the peer chose it: keep the log line one line
        logger.debug("refused %s %s: %d %s", request.method, where, status, reason)
        response = web.Response(status=status, text=reason)
        if status == 401:
            self._handler.count_auth_failure()
            response.headers["WWW-Authenticate"] = 'Bearer realm="agentsync"'
        if close:
            response.force_close()
        return response

    async def _sync(self, request: web.Request) -> web.Response:
        certified = self._certified(request)  # before the body: refusing is cheap here
        body = await self._read_body(request)
        remote = request.remote
        return await self._turns.run(
            request[_REMOTE_KEY], lambda: self._answer(body, remote, certified)
        )

    def _certified(self, request: web.Request) -> str | None:
        """The node id the client's certificate names when node ids are bound (else None);
        a 403, the body left unread, when it names none."""
        if not self._bind_node_ids:
            return None
        transport = request.transport
        certified = certified_node_id(
            transport.get_extra_info("peercert") if transport is not None else None
        )
        if certified is None:
            raise _Refused(
                403, "node ids are bound to certificates here: yours names none", close=True
            )
        return certified

    def _answer(self, body: bytes, remote: str | None, certified: str | None) -> web.Response:
        """Open, handle and seal one sync body: the CPU work, done in the sender's turn."""
        channel, header, sender = self._channel, b"", None
        if channel is not None:
            try:
                body, opened = channel.open_request(body)
            except AuthenticationError as exc:
                raise _Refused(401, f"authentication failed: {exc}") from None
            header, sender = opened.raw, opened.sender
        try:
            reply = self._handler.handle_sync(
                body, remote=remote, sender=sender, certified=certified
            )
        except ClusterMismatchError as exc:  # a ProtocolError too: check it first
            return web.Response(status=409, text=one_line(str(exc)))
        except AccessDeniedError as exc:  # and this one
            return web.Response(status=403, text=one_line(str(exc)))
        except (DecodeError, ProtocolError) as exc:
            return web.Response(status=400, text=one_line(str(exc)))
        if channel is None:
            return web.Response(body=reply, content_type=MSGPACK)
        return web.Response(body=channel.seal_response(reply, header), content_type=SEALED)

    async def _read_body(self, request: web.Request) -> bytes:
        """The request body, read only if it can be accepted, within the size and time bounds."""
        if not identity_encoded(request.headers):
            raise _Refused(415, "compressed bodies are refused; send Content-Encoding identity")
        kind = request.content_type
        if self._channel is not None:
            if kind != SEALED:
                raise _Refused(401, f"this node's cluster has a secret: send {SEALED} bodies")
        elif kind == SEALED:
            raise _Refused(415, f"this node has no secret: send {MSGPACK}, not sealed bodies")
        elif kind != MSGPACK:
            raise _Refused(415, f"expected Content-Type {MSGPACK}")
        limit = self._max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, f"body larger than {limit} bytes", close=True)
        try:
            return await asyncio.wait_for(read_bounded(request.content, limit), self._body_timeout)
        except BodyTooLargeError:
            raise _Refused(413, f"body larger than {limit} bytes", close=True) from None
        except ConnectionError:  # the client went away mid-body: nobody reads this answer
            raise _Refused(400, "connection lost before the body ended", close=True) from None
        except asyncio.TimeoutError:
            raise _Refused(
                408, f"body not received within {self._body_timeout:g} s", close=True
            ) from None

    async def _health(self, request: web.Request) -> web.Response:
        if not self._authorized(request):  # liveness only: no ids, peers or versions
            return web.json_response({"alive": True})
        return web.json_response(self._handler.health())

    async def _state(self, request: web.Request) -> web.Response:
        self._check_token(request)
        return web.json_response(self._handler.state_json())

    async def _metrics(self, request: web.Request) -> web.Response:
        self._check_token(request)
        text = self._handler.metrics_text()
        return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _page(self, request: web.Request) -> web.Response:
        """The status page, to anyone: it holds no data and asks for the token itself."""
        return web.Response(body=PAGE, headers=PAGE_HEADERS)

    async def _status(self, request: web.Request) -> web.Response:
        self._check_token(request)
        return web.json_response(self._handler.status_json(), headers={"Cache-Control": "no-store"})

    def _authorized(self, request: web.Request) -> bool:
        """No secret, or ``Authorization: Bearer`` with an installed key's token."""
        if self._channel is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._channel.keyring.accepts_token(token.strip())

    def _check_token(self, request: web.Request) -> None:
        if not self._authorized(request):
            raise _Refused(401, "this node's cluster has a secret: send its key's bearer token")


class _GatedSite(web.BaseSite):
    """A TCP site whose every connection passes the gate before aiohttp sees it.

    aiohttp accepts every connection and leaves capping them to the
    application; its ``TCPSite`` has no hook for that, so this site builds
    the listening socket itself and wraps each connection's protocol. With
    ``ssl``, the handshake too waits for the gate (``create_server(ssl=...)``
    would do it first, for any number of connections).
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        gate: Gate,
        handler: SyncHandler,
        *,
        ssl: SSLContext | None,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._gate = gate
        self._handler = handler
        self._ssl = ssl
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return base_url(self._host, self._port, tls=self._ssl is not None)

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        gate, handler, ssl, handshakes = self._gate, self._handler, self._ssl, self._handshakes
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GatedConnection(server, gate, handler, ssl, handshakes), self._host, self._port
        )

    async def stop(self) -> None:
        await super().stop()
        handshakes = list(self._handshakes)  # aiohttp knows nothing of these connections yet
        for task in handshakes:
            task.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)


class _GatedConnection(asyncio.Protocol):
    """One connection: counted against its address, or answered 429/503 and closed unread.

    Admitted, it hands every event to aiohttp's own protocol for it, after
    the TLS handshake when there is one.
    """

    def __init__(
        self,
        server: web.Server,
        gate: Gate,
        handler: SyncHandler,
        ssl: SSLContext | None,
        handshakes: set[asyncio.Task[None]],
    ) -> None:
        self._server = server
        self._gate = gate
        self._handler = handler
        self._ssl = ssl
        self._handshakes = handshakes
        self._inner: asyncio.Protocol | None = None
        self._remote: str | None = None
        self._early: list[bytes] = []
        """Decrypted bytes that arrived as the handshake ended, before aiohttp's protocol."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        remote = remote_key(peer[0] if isinstance(peer, tuple) and peer else None)
        refusal = self._gate.connect(remote)
        if refusal is not None:
            self._handler.count_error()
            logger.debug("refused a connection from %s: %s", remote, refusal.reason)
            if self._ssl is None:  # a TLS client could not read the plain answer
                transport.write(_refusal_bytes(refusal, self._gate.limits.retry_after))
            transport.close()
            return
        self._remote = remote
        if self._ssl is None:
            self._admit(transport)
            return
        transport.pause_reading()  # the ClientHello waits for start_tls
        task = asyncio.get_running_loop().create_task(self._handshake(transport, self._ssl))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, ssl: SSLContext) -> None:
        """Secure the connection, then admit it; a failed handshake is counted and closed."""
        secured = None
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, self, ssl, server_side=True, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
            )
        except OSError as exc:  # ssl.SSLError, a reset, the handshake's timeout
            logger.debug("TLS handshake from %s failed: %s", self._remote, one_line(str(exc)))
        finally:
            if secured is None:  # failed, closed or cancelled: start_tls closed the transport
                self._release()
        if secured is None:
            self._handler.count_error()
            return
        self._admit(secured)

    def _admit(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._server()
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self._inner.data_received(data)

    def _release(self) -> None:
        if self._remote is not None:
            self._gate.disconnect(self._remote)
            self._remote = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._remote is not None:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def _refusal_bytes(refusal: Refusal, retry_after: int) -> bytes:
    """A whole HTTP/1.1 answer to a connection refused before its request was read."""
    body = refusal.reason.encode()
    phrase = {429: "Too Many Requests", 503: "Service Unavailable"}[refusal.status]
    head = (
        f"HTTP/1.1 {refusal.status} {phrase}\r\nRetry-After: {retry_after}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body
