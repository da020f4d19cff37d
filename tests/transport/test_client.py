"""SyncClient against real servers on loopback: exchanges, failures, bounds, backoff."""

from __future__ import annotations

import asyncio
import gzip
import random

import pytest
from aiohttp import web

from agentsync.errors import ClusterMismatchError, ProtocolError
from agentsync.errors import PeerUnavailableError as Unavailable
from agentsync.transport import MSGPACK, SyncClient
from tests.transport.helpers import (
    FakeClock,
    FakeHandler,
    SilentPeer,
    closed_port_url,
    run,
    serving,
    started,
    wait_until,
)


class HostilePeer:
    """A peer that answers sync requests in the wrong way named by ``how``."""

    def __init__(self) -> None:
        self.how = ""
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HostilePeer:
        app = web.Application()
        app.router.add_post("/v1/sync", self._sync)
        app.router.add_get("/v1/health", self._not_json)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _sync(self, request: web.Request) -> web.StreamResponse:
        if self.how == "gzip":  # a bomb: 1 MB of zeros in about 1 KB
            bomb = gzip.compress(b"\x00" * 1_000_000)
            return web.Response(
                body=bomb, headers={"Content-Type": MSGPACK, "Content-Encoding": "gzip"}
            )
        if self.how == "html":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        if self.how == "big":
            return web.Response(body=b"a" * 2000, content_type=MSGPACK)
        response = web.StreamResponse(headers={"Content-Type": MSGPACK})
        response.enable_chunked_encoding()  # no Content-Length to trust
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"a" * 100)
        await response.write_eof()
        return response

    async def _not_json(self, request: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")


def test_exchange_returns_the_reply_body_and_keeps_the_peer_ready() -> None:
    handler = FakeHandler()

    async def main() -> tuple[bytes, bytes]:
        async with serving(handler) as server, started(SyncClient()) as client:
            first = await client.exchange(server.url, b"one")
            second = await client.exchange(server.url + "/", b"two")  # the same peer
            assert client.ready(server.url)
            assert client.failures(server.url) == 0
            assert client.backoff_remaining(server.url) == 0.0
            return first, second

    assert run(main()) == (b"echo:one", b"echo:two")
    assert handler.bodies == [b"one", b"two"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ProtocolError("expected a request, got a response"), "HTTP 400: expected a request"),
        (ClusterMismatchError("message from cluster 'blue'"), "HTTP 409: message from cluster"),
    ],
)
def test_a_refusal_is_peer_unavailable_with_status_and_reason(
    error: Exception, expected: str
) -> None:
    handler = FakeHandler()
    handler.fail_with = error

    async def main() -> tuple[str, str, int]:
        async with serving(handler) as server, started(SyncClient()) as client:
            with pytest.raises(Unavailable) as caught:
                await client.exchange(server.url, b"x")
            return str(caught.value), server.url, client.failures(server.url)

    message, url, failures = run(main())
    assert message.startswith(f"{url}/v1/sync: {expected}")
    assert "\n" not in message
    assert failures == 1


def test_a_refused_connection_is_peer_unavailable() -> None:
    async def main() -> tuple[str, int]:
        url = await closed_port_url()
        async with started(SyncClient()) as client:
            with pytest.raises(Unavailable) as caught:
                await client.exchange(url, b"x")
            return str(caught.value), client.failures(url)

    message, failures = run(main())
    assert "ClientConnectorError" in message
    assert failures == 1


def test_a_peer_that_never_answers_times_out() -> None:
    async def main() -> str:
        async with SilentPeer() as peer, started(SyncClient(timeout=0.3)) as client:
            with pytest.raises(Unavailable) as caught:
                await client.exchange(peer.url, b"x")
            assert client.failures(peer.url) == 1
            return str(caught.value)

    assert run(main()).endswith("/v1/sync: timed out after 0.3 s")


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("gzip", "reply is compressed"),
        ("html", "reply is text/html, not application/x-msgpack"),
        ("big", "reply larger than 1000 bytes"),  # refused on its Content-Length
        ("chunked", "reply larger than 1000 bytes"),  # refused while reading
    ],
)
def test_a_hostile_reply_is_peer_unavailable(how: str, reason: str) -> None:
    async def main() -> tuple[str, int]:
        async with HostilePeer() as peer, started(SyncClient(max_body_bytes=1000)) as client:
            peer.how = how
            with pytest.raises(Unavailable) as caught:
                await client.exchange(peer.url, b"x")
            return str(caught.value), client.failures(peer.url)

    message, failures = run(main())
    assert reason in message
    assert failures == 1


def test_get_json_reads_a_document_and_refuses_non_json() -> None:
    async def main() -> None:
        async with (
            serving(FakeHandler()) as server,
            HostilePeer() as hostile,
            started(SyncClient()) as client,
        ):
            assert await client.get_json(server.url, "/v1/state") == {"counter": 3}
            with pytest.raises(Unavailable, match="not JSON"):
                await client.get_json(hostile.url, "/v1/health")
            with pytest.raises(Unavailable, match="HTTP 404"):
                await client.get_json(server.url, "/v1/nothing")
            with pytest.raises(ValueError, match="must start with"):
                await client.get_json(server.url, "v1/state")
            assert client.failures(server.url) == 0, "reads do not feed the backoff"

    run(main())


def test_a_body_larger_than_a_peer_accepts_is_not_sent() -> None:
    handler = FakeHandler()

    async def main() -> int:
        async with serving(handler) as server, started(SyncClient(max_body_bytes=10)) as client:
            with pytest.raises(ValueError, match="exceeds 10"):
                await client.exchange(server.url, b"a" * 11)
            return client.failures(server.url)

    assert run(main()) == 0
    assert handler.bodies == []


def test_an_unstarted_or_closed_client_refuses_and_close_is_idempotent() -> None:
    async def main() -> None:
        client = SyncClient()
        await client.close()
        with pytest.raises(RuntimeError):
            await client.exchange("http://127.0.0.1:9", b"x")
        await client.start()
        with pytest.raises(RuntimeError):
            await client.start()
        await client.close()
        await client.close()
        with pytest.raises(RuntimeError):
            await client.get_json("http://127.0.0.1:9", "/v1/health")

    run(main())


def test_a_bad_peer_url_is_a_value_error_before_anything_is_sent() -> None:
    async def main() -> None:
        async with started(SyncClient()) as client:
            with pytest.raises(ValueError, match="http"):
                await client.exchange("ftp://peer:1", b"x")

    run(main())


def test_a_silent_peer_never_delays_an_exchange_with_another() -> None:
    async def main() -> None:
        async with (
            SilentPeer() as silent,
            serving(FakeHandler()) as fast,
            started(SyncClient(timeout=5.0)) as client,
        ):
            slow = asyncio.create_task(client.exchange(silent.url, b"slow"))
            await wait_until(lambda: silent.accepted == 1)  # its request is in flight
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await client.exchange(fast.url, b"fast") == b"echo:fast"
            assert loop.time() - began < 1.0
            assert not slow.done(), "the silent peer is still pending"
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            assert client.failures(silent.url) == 0, "a cancelled exchange is no failure"

    run(main())


def test_concurrency_is_bounded_across_all_peers() -> None:
    state = {"now": 0, "most": 0}
    gate = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await gate.wait()
        state["now"] -= 1
        return web.Response(body=b"ok", content_type=MSGPACK)

    async def peer() -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/v1/sync", hold)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def main() -> list[bytes]:
        (one, url1), (two, url2) = await peer(), await peer()
        try:
            async with started(SyncClient(max_concurrency=2)) as client:
                urls = [url1, url2] * 3
                tasks = [asyncio.create_task(client.exchange(url, b"x")) for url in urls]
                await wait_until(lambda: state["now"] == 2)
                # Give the other four every chance to arrive if they could.
                loop = asyncio.get_running_loop()
                watch_until = loop.time() + 0.2
                while loop.time() < watch_until:
                    assert state["now"] <= 2
                    await asyncio.sleep(0.01)
                gate.set()
                return list(await asyncio.gather(*tasks))
        finally:
            await one.cleanup()
            await two.cleanup()

    assert run(main()) == [b"ok"] * 6
    assert state["most"] == 2


def test_backoff_grows_with_full_jitter_and_resets_on_success() -> None:
    clock = FakeClock()
    handler = FakeHandler()
    handler.fail_with = ProtocolError("not now")
    expected = random.Random(7)

    async def main() -> None:
        client = SyncClient(backoff_base=0.1, backoff_max=0.5, rng=random.Random(7), clock=clock)
        async with serving(handler) as server, started(client):
            url = server.url
            for n, window in enumerate([0.1, 0.2, 0.4, 0.5, 0.5], start=1):
                with pytest.raises(Unavailable):
                    await client.exchange(url, b"x")
                assert client.failures(url) == n
                delay = client.backoff_remaining(url)
                assert delay == pytest.approx(expected.uniform(0.0, window))
                assert 0.0 <= delay <= window
                assert not client.ready(url)
            clock.now += 0.5  # the longest possible wait has passed
            assert client.ready(url)
            assert client.backoff_remaining(url) == 0.0
            handler.fail_with = None
            await client.exchange(url, b"x")
            assert (client.failures(url), client.ready(url)) == (0, True)

    run(main())


def test_bad_settings_are_refused() -> None:
    for bad in ({"timeout": 0}, {"max_concurrency": 0}, {"max_body_bytes": 0}):
        with pytest.raises(ValueError):
            SyncClient(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SyncClient(backoff_base=2.0, backoff_max=1.0)
