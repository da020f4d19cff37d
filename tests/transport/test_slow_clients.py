"""Slow and greedy clients on real sockets: every stalled connection is closed in
bounded time, and what one address may hold is capped before any body is read.

The attackers connect from 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback
on Linux), so the server tells them apart from the honest client on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from agentsync.transport import server as server_module
from agentsync.transport.limits import Limits
from tests.transport.helpers import SYNC_HEAD, FakeHandler, raw_request, run, serving, trickle
from tests.transport.helpers import wait_until as wait_for

ATTACKER = "127.0.0.2"
OTHER_ATTACKER = "127.0.0.3"
Send = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def connect(
    port: int, source: str = ATTACKER
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lowercased names) and body of one HTTP answer."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split()[1]), headers, body


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything received until the server closed the connection (a reset included)."""
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionResetError:  # it closed with our unread bytes pending
        pass
    return data


async def nothing(writer: asyncio.StreamWriter) -> None:
    """An idle connection: it sends nothing at all."""


async def partial_headers(writer: asyncio.StreamWriter) -> None:
    writer.write(b"POST /v1/sync HTTP/1.1\r\nHost: test\r\n")


async def trickled_headers(writer: asyncio.StreamWriter) -> None:
    writer.write(b"POST /v1/sync HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    await trickle(writer)  # one header byte every 50 ms: it never ends


async def trickled_sync_body(writer: asyncio.StreamWriter) -> None:
    writer.write(f"{SYNC_HEAD}Content-Length: 1000\r\n\r\nab".encode())
    await trickle(writer)


async def trickled_body_elsewhere(writer: asyncio.StreamWriter) -> None:
    """A body nobody reads (a GET's): answered, then drained for the lingering time only."""
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nab")
    await trickle(writer)


@pytest.mark.parametrize(
    ("send", "answer"),
    [
        (nothing, b""),
        (partial_headers, b""),
        (trickled_headers, b""),
        (trickled_sync_body, b"HTTP/1.1 408 "),
        (trickled_body_elsewhere, b"HTTP/1.1 200 "),
    ],
    ids=lambda p: getattr(p, "__name__", repr(p)),
)
def test_a_stalled_connection_is_closed_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch, send: Send, answer: bytes
) -> None:
    """The keepalive timeout is set at connect and not moved by bytes that complete no
    request; a body is bounded by the body timeout, or the lingering time if unread."""
    monkeypatch.setattr(server_module, "KEEPALIVE_TIMEOUT", 0.3)
    monkeypatch.setattr(server_module, "LINGERING_TIME", 0.3)

    async def main() -> tuple[bytes, float]:
        async with serving(FakeHandler(), body_timeout=0.3) as server:
            reader, writer = await connect(server.port)
            began = time.monotonic()
            sending = asyncio.create_task(send(writer))
            try:
                data = await asyncio.wait_for(until_closed(reader), 5.0)
                waited = time.monotonic() - began
            finally:
                sending.cancel()
                writer.close()
            await wait_for(lambda: server.gate.open_connections == 0)
            return data, waited

    data, waited = run(main())
    assert data.startswith(answer)
    assert 0.25 < waited < 3.0


def test_connections_over_an_addresses_cap_are_answered_429_and_closed() -> None:
    handler = FakeHandler()

    async def main() -> None:
        async with serving(handler, limits=Limits(connections_per_remote=2)) as server:
            held = [await connect(server.port) for _ in range(2)]
            await wait_for(lambda: server.gate.connections(ATTACKER) == 2)
            reader, writer = await connect(server.port)
            status, headers, body = await read_answer(reader)
            assert (status, headers["retry-after"], headers["connection"]) == (429, "1", "close")
            assert body == b"too many connections from this address (at most 2)"
            assert await reader.read() == b""
            writer.close()
            # Another address is served meanwhile, and the held ones free their slots.
            assert await raw_request(
                server.port, f"{SYNC_HEAD}Content-Length: 1\r\n\r\nx".encode()
            ) == (200, b"echo:x")
            for _, held_writer in held:
                held_writer.close()
            await wait_for(lambda: server.gate.open_connections == 0)
            reader, writer = await connect(server.port)
            writer.write(f"{SYNC_HEAD}Content-Length: 1\r\n\r\ny".encode())
            assert (await read_answer(reader))[::2] == (200, b"echo:y")
            writer.close()

    run(main())
    assert handler.bodies == [b"x", b"y"]
    assert handler.errors == 1


def test_a_request_over_the_cap_is_refused_before_its_body_is_read() -> None:
    """The refused request announces a megabyte and sends none of it: the answer comes anyway."""
    handler = FakeHandler()
    limits = Limits(requests_per_remote=1, requests=2)

    async def main() -> None:
        async with serving(handler, limits=limits) as server:
            _, slow = await connect(server.port)
            slow.write(f"{SYNC_HEAD}Content-Length: 1000\r\n\r\nab".encode())
            await wait_for(lambda: server.gate.requests(ATTACKER) == 1)
            reader, writer = await connect(server.port)
            writer.write(f"{SYNC_HEAD}Content-Length: 1000000\r\n\r\n".encode())
            status, headers, body = await read_answer(reader)
            assert (status, headers["retry-after"]) == (429, "1")
            assert body == b"too many requests in flight from this address (at most 1)"
            writer.close()
            # The server is full (2 in flight) for everyone else: 503.
            _, second = await connect(server.port, OTHER_ATTACKER)
            second.write(f"{SYNC_HEAD}Content-Length: 1000\r\n\r\nab".encode())
            await wait_for(lambda: server.gate.in_flight == 2)
            reader, writer = await connect(server.port, "127.0.0.4")
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, body = await read_answer(reader)
            assert (status, headers["retry-after"]) == (503, "1")
            assert body == b"too many requests in flight (at most 2); try again later"
            writer.close()
            for held in (slow, second):
                held.close()
            await wait_for(lambda: server.gate.in_flight == 0)
            assert await raw_request(
                server.port, f"{SYNC_HEAD}Content-Length: 1\r\n\r\nz".encode()
            ) == (200, b"echo:z")

    run(main())
    assert handler.bodies == [b"z"]
