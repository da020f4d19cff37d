"""SyncServer against real requests on loopback: endpoints, refusals, bounds, bugs."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import time

import aiohttp
import pytest

from agentsync.errors import ClusterMismatchError, DecodeError, ProtocolError
from agentsync.sync.engine import DEFAULT_MAX_MESSAGE_BYTES
from agentsync.transport import DEFAULT_MAX_BODY_BYTES, MSGPACK, SyncServer
from agentsync.transport import server as server_module
from agentsync.transport.wire import read_bounded
from tests.transport.helpers import (
    SYNC_HEAD,
    FakeHandler,
    raw_request,
    run,
    serving,
    trickle,
    wait_until,
)

MSGPACK_HEADERS = {"Content-Type": MSGPACK}


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(url + "/v1/sync", data=body, headers=headers) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.read()


async def _get(url: str, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.read()


def test_sync_round_trip_is_msgpack_both_ways() -> None:
    handler = FakeHandler()

    async def main() -> tuple[int, str, bytes]:
        async with serving(handler) as server:
            return await _post(server.url, b"\x91\x01", MSGPACK_HEADERS)

    assert run(main()) == (200, MSGPACK, b"echo:\x91\x01")
    assert handler.bodies == [b"\x91\x01"]
    assert handler.errors == 0


def test_health_state_and_metrics_have_their_content_types() -> None:
    async def main() -> list[tuple[int, str, bytes]]:
        async with serving(FakeHandler()) as server:
            return [await _get(server.url, p) for p in ("/v1/health", "/v1/state", "/metrics")]

    health, state, metrics = run(main())
    assert health == (200, "application/json; charset=utf-8", b'{"status": "ok"}')
    assert state == (200, "application/json; charset=utf-8", b'{"counter": 3}')
    assert metrics == (
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        b"agentsync_rounds_total 7\n",
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DecodeError("not valid msgpack: unpack(b) received extra data"), 400),
        (ProtocolError("expected a request, got a response"), 400),
        (ClusterMismatchError("message from cluster 'blue'; this node is in 'green'"), 409),
    ],
)
def test_handler_refusals_answer_with_their_reason(error: Exception, status: int) -> None:
    handler = FakeHandler()
    handler.fail_with = error

    async def main() -> tuple[int, str, bytes]:
        async with serving(handler) as server:
            return await _post(server.url, b"\xc1", MSGPACK_HEADERS)

    assert run(main()) == (status, "text/plain; charset=utf-8", str(error).encode())
    assert handler.errors == 0, "the handler counts its own refusals"


def test_a_long_or_multiline_reason_is_sent_as_one_bounded_line() -> None:
    handler = FakeHandler()
    handler.fail_with = DecodeError("line one\nline two\x00" + "x" * 1000)

    async def main() -> bytes:
        async with serving(handler) as server:
            return (await _post(server.url, b"\xc1", MSGPACK_HEADERS))[2]

    reason = run(main()).decode()
    assert reason.startswith("line one line two x")
    assert len(reason) <= 300
    assert reason.endswith("...")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Content-Type": "application/json"}, b"expected Content-Type application/x-msgpack"),
        ({}, b"expected Content-Type application/x-msgpack"),
        ({"Content-Type": MSGPACK, "Content-Encoding": "gzip"}, b"compressed bodies are refused"),
        ({"Content-Type": MSGPACK, "Content-Encoding": "identity, br"}, b"compressed"),
    ],
)
def test_wrong_content_type_or_encoding_is_415_and_never_reaches_the_handler(
    headers: dict[str, str], reason: bytes
) -> None:
    handler = FakeHandler()
    body = gzip.compress(b"\x00" * 100_000)  # would inflate past the limit

    async def main() -> tuple[int, str, bytes]:
        async with serving(handler, max_body_bytes=100_000) as server:
            return await _post(server.url, body, headers)

    status, _, text = run(main())
    assert (status, text[: len(reason)]) == (415, reason)
    assert handler.bodies == []
    assert handler.errors == 1


def test_identity_encoding_is_accepted() -> None:
    handler = FakeHandler()

    async def main() -> int:
        async with serving(handler) as server:
            headers = {"Content-Type": MSGPACK, "Content-Encoding": "identity"}
            return (await _post(server.url, b"\x01", headers))[0]

    assert run(main()) == 200
    assert handler.bodies == [b"\x01"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/sync", 405), ("PUT", "/v1/sync", 405), ("POST", "/v1/health", 405),
     ("GET", "/v2/sync", 404)],
)  # fmt: skip
def test_wrong_method_or_path_is_refused_and_counted(method: str, path: str, status: int) -> None:
    handler = FakeHandler()

    async def main() -> tuple[int, str, bytes]:
        async with serving(handler) as server:
            return await _get(server.url, path, method)

    got, content_type, text = run(main())
    assert got == status
    assert content_type.startswith("text/plain")
    assert text.startswith(str(status).encode())
    assert handler.bodies == []
    assert handler.errors == 1


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    handler = FakeHandler()

    async def main() -> int:
        async with serving(handler, max_body_bytes=1000) as server:
            return (await _post(server.url, b"a" * 1000, MSGPACK_HEADERS))[0]

    assert run(main()) == 200
    assert handler.bodies == [b"a" * 1000]


def test_oversize_content_length_is_413_before_any_body_is_read() -> None:
    handler = FakeHandler()

    async def main() -> tuple[int, bytes]:
        async with serving(handler, max_body_bytes=1000) as server:
            # Claims a gigabyte and sends none of it: refused on the header alone.
            return await raw_request(
                server.port, f"{SYNC_HEAD}Content-Length: {1 << 30}\r\n\r\n".encode()
            )

    assert run(main()) == (413, b"body larger than 1000 bytes")
    assert handler.bodies == []
    assert handler.errors == 1


def test_oversize_chunked_body_is_413_without_content_length() -> None:
    handler = FakeHandler()
    chunks = b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"

    async def main() -> tuple[int, bytes]:
        async with serving(handler, max_body_bytes=1000) as server:
            head = f"{SYNC_HEAD}Transfer-Encoding: chunked\r\n\r\n".encode()
            return await raw_request(server.port, head + chunks)

    assert run(main()) == (413, b"body larger than 1000 bytes")
    assert handler.bodies == []
    assert handler.errors == 1


def test_a_chunked_body_within_the_limit_is_accepted() -> None:
    handler = FakeHandler()
    chunks = b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"

    async def main() -> tuple[int, bytes]:
        async with serving(handler, max_body_bytes=1000) as server:
            head = f"{SYNC_HEAD}Transfer-Encoding: chunked\r\n\r\n".encode()
            return await raw_request(server.port, head + chunks)

    assert run(main()) == (200, b"echo:" + b"a" * 768)


def test_a_trickled_body_is_cut_off_at_the_body_timeout_without_blocking_others() -> None:
    handler = FakeHandler()

    async def main() -> None:
        async with serving(handler, body_timeout=0.5) as server:
            start = time.monotonic()
            # One byte every 50 ms: a timeout per read would never fire; the deadline does.
            head = f"{SYNC_HEAD}Content-Length: 1000\r\n\r\nab".encode()
            slow = asyncio.create_task(raw_request(server.port, head, then=trickle))
            await wait_until(lambda: time.monotonic() - start > 0.1)
            fast = await _post(server.url, b"\x01", MSGPACK_HEADERS)
            assert fast[0] == 200
            assert not slow.done(), "the fast request did not wait for the slow one"
            assert await slow == (408, b"body not received within 0.5 s")
            assert 0.5 <= time.monotonic() - start < 3.0

    run(main())
    assert handler.bodies == [b"\x01"]
    assert handler.errors == 1


def test_a_client_that_hangs_up_mid_body_is_counted_and_nothing_is_called() -> None:
    handler = FakeHandler()

    async def main() -> None:
        async with serving(handler) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"{SYNC_HEAD}Content-Length: 100\r\n\r\nab".encode())
            await writer.drain()
            writer.close()
            await wait_until(lambda: handler.errors == 1)

    run(main())
    assert handler.bodies == []


def test_a_connection_stuck_in_its_headers_is_closed_at_the_keepalive_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "KEEPALIVE_TIMEOUT", 0.3)

    async def main() -> tuple[bytes, float]:
        async with serving(FakeHandler()) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /v1/sync HTTP/1.1\r\nHost: test\r\n")  # and never the rest
            began = time.monotonic()
            try:
                return await asyncio.wait_for(reader.read(), 5.0), time.monotonic() - began
            finally:
                writer.close()

    data, waited = run(main())
    assert data == b"", "closed without an answer"
    assert waited < 3.0


def test_stop_cancels_a_request_still_reading_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "SHUTDOWN_TIMEOUT", 0.2)
    handler = FakeHandler()

    async def main() -> float:
        reading = asyncio.Event()

        async def spy(stream: aiohttp.StreamReader, limit: int) -> bytes:
            reading.set()
            return await read_bounded(stream, limit)

        monkeypatch.setattr(server_module, "read_bounded", spy)
        server = SyncServer(handler)  # body_timeout 10 s: stop must not wait for it
        await server.start()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"{SYNC_HEAD}Content-Length: 100\r\n\r\nab".encode())
        await asyncio.wait_for(reading.wait(), 5.0)
        began = time.monotonic()
        await server.stop()
        writer.close()
        return time.monotonic() - began

    assert 0.1 < run(main()) < 3.0
    assert handler.bodies == []


def test_a_handler_bug_is_a_generic_500_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = FakeHandler()
    handler.fail_with = KeyError("secret internal detail")

    async def main() -> tuple[tuple[int, str, bytes], tuple[int, str, bytes]]:
        async with serving(handler) as server:
            failed = await _post(server.url, b"\x01", MSGPACK_HEADERS)
            handler.fail_with = None
            return failed, await _post(server.url, b"\x02", MSGPACK_HEADERS)

    with caplog.at_level(logging.ERROR, logger="agentsync.transport"):
        failed, after = run(main())
    assert failed == (500, "text/plain; charset=utf-8", b"internal server error")
    assert after[0] == 200
    assert handler.errors == 1
    [record] = [r for r in caplog.records if r.name == "agentsync.transport"]
    assert record.exc_info is not None
    assert "secret internal detail" in caplog.text


def test_a_bug_in_a_json_endpoint_is_a_500_too() -> None:
    class Broken(FakeHandler):
        def state_json(self) -> dict[str, object]:
            return {"not json": object()}

    handler = Broken()

    async def main() -> tuple[int, str, bytes]:
        async with serving(handler) as server:
            return await _get(server.url, "/v1/state")

    assert run(main())[0] == 500
    assert handler.errors == 1


def test_access_log_is_off_by_default_and_on_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    async def main(access_log: bool) -> None:
        async with serving(FakeHandler(), access_log=access_log) as server:
            await _get(server.url, "/v1/health")

    with caplog.at_level(logging.DEBUG):
        run(main(False))
    assert not [r for r in caplog.records if "access" in r.name]
    # No option was refused: aiohttp falls back to defaults with a warning if one is.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        run(main(True))
    assert [r.name for r in caplog.records if "access" in r.name] == ["agentsync.transport.access"]


def test_url_and_port_exist_only_while_running_and_stop_is_idempotent() -> None:
    server = SyncServer(FakeHandler())
    with pytest.raises(RuntimeError):
        _ = server.url

    async def main() -> None:
        await server.start()
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        with pytest.raises(RuntimeError):
            await server.start()
        await server.stop()
        await server.stop()
        with pytest.raises(RuntimeError):
            _ = server.port

    run(main())


def test_a_taken_port_raises_oserror_and_leaves_the_server_stopped() -> None:
    async def main() -> None:
        async with serving(FakeHandler()) as first:
            second = SyncServer(FakeHandler(), port=first.port)
            with pytest.raises(OSError):
                await second.start()
            with pytest.raises(RuntimeError):
                _ = second.url

    run(main())


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_url_is_bracketed() -> None:
    async def main() -> tuple[str, int]:
        async with serving(FakeHandler(), host="::1") as server:
            return server.url, (await _get(server.url, "/v1/health"))[0]

    url, status = run(main())
    assert url.startswith("http://[::1]:")
    assert status == 200


def test_the_default_body_limit_leaves_room_for_the_largest_engine_message() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES < DEFAULT_MAX_BODY_BYTES <= DEFAULT_MAX_MESSAGE_BYTES * 1.05


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        SyncServer(FakeHandler(), max_body_bytes=0)
    with pytest.raises(ValueError):
        SyncServer(FakeHandler(), body_timeout=0)
