"""What the transport tests share: a fake handler, servers on loopback, raw HTTP.

Each test function is synchronous and drives its coroutine with ``run``, so
no asyncio plugin is needed. Waiting is always polling with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from agentsync.transport import SyncClient, SyncServer

T = TypeVar("T")

SYNC_HEAD = (
    "POST /v1/sync HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    "Content-Type: application/x-msgpack\r\n"
)
"""The start of a raw sync request; add headers, then ``\\r\\n`` and the body."""


def run(coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run one test's coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


class FakeHandler:
    """A SyncHandler that echoes sync bodies, records calls and raises on demand."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.errors = 0
        self.auth_failures = 0
        self.certified: list[str | None] = []
        """The node id each request's client certificate named (None: not bound)."""
        self.fail_with: Exception | None = None

    def handle_sync(
        self,
        body: bytes,
        remote: str | None = None,
        sender: str | None = None,
        certified: str | None = None,
    ) -> bytes:
        self.bodies.append(body)
        self.certified.append(certified)
        if self.fail_with is not None:
            raise self.fail_with
        return b"echo:" + body

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def state_json(self) -> dict[str, Any]:
        return {"counter": 3}

    def metrics_text(self) -> str:
        return "agentsync_rounds_total 7\n"

    def count_error(self) -> None:
        self.errors += 1

    def count_auth_failure(self) -> None:
        self.auth_failures += 1


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serving(handler: FakeHandler | Any, **options: Any) -> AsyncIterator[SyncServer]:
    server = SyncServer(handler, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def started(client: SyncClient) -> AsyncIterator[SyncClient]:
    await client.start()
    try:
        yield client
    finally:
        await client.close()


class SilentPeer:
    """A TCP server that accepts connections and never answers them."""

    def __init__(self) -> None:
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> SilentPeer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)


async def closed_port_url() -> str:
    """The URL of a loopback port that nothing listens on (connections are refused)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def raw_request(
    port: int,
    data: bytes,
    *,
    then: Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]] | None = None,
) -> tuple[int, bytes]:
    """Send raw bytes, then run ``then`` (more sending) until the status and body arrive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    sending = asyncio.create_task(then(writer)) if then else None
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        return int(lines[0].split()[1]), await reader.readexactly(length)
    finally:
        if sending is not None:
            sending.cancel()
        writer.close()


async def trickle(writer: asyncio.StreamWriter, interval: float = 0.05) -> None:
    """Send one more body byte every ``interval`` seconds (a slow client), until cancelled."""
    for _ in range(10_000):
        await asyncio.sleep(interval)
        if writer.is_closing():
            return
        writer.write(b"x")
        try:
            await writer.drain()
        except ConnectionError:  # the server hung up on us, as it should
            return
