"""Nodes with a cluster secret, on loopback: sealed exchanges, 401s, bearer tokens, rotation.

Every refused request must leave the receiver's state as it was. Waits poll
with a deadline; randomness is seeded.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from agentsync import Node
from agentsync.security import Channel, Keyring
from agentsync.sync import encode_message
from agentsync.transport.wire import MSGPACK, SEALED
from tests.node.helpers import converge, eventually, run, started, stop_all

FAST = 0.05
SECRET = b"s" * 32
OTHER = b"o" * 32


def sealed_node(node_id: str, secret: bytes | str = SECRET, **kwargs: Any) -> Node:
    return Node(node_id, gossip_interval=FAST, secret=secret, **kwargs)


async def post(url: str, body: bytes, content_type: str = SEALED) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/v1/sync", data=body, headers={"Content-Type": content_type}
        ) as response,
    ):
        return response.status, (await response.read()).decode("latin-1")


async def get(url: str, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, headers=headers) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


def request_of(node: Node) -> bytes:
    """The plain body of ``node``'s next sync request to an unknown peer (its state)."""
    return encode_message(node._engine.request(None))


def recorded_failures(node: Node) -> list[str]:
    """Record every failed exchange of ``node`` (its ``_failed`` calls) into the list returned."""
    failures: list[str] = []
    original = node._failed

    def failed(url: str) -> None:
        failures.append(url)
        original(url)

    node._failed = failed  # type: ignore[method-assign]
    return failures


def test_two_nodes_with_the_secret_converge_both_ways() -> None:
    async def main() -> None:
        a, b = sealed_node("a"), sealed_node("b", secret=SECRET)
        await started(a, b)
        try:
            a.add_peer(b.url)
            a.counter("hits").increment(3)
            b.set("seen").add("b")
            await converge([a, b])
            assert a.value == {"hits": 3, "seen": frozenset({"b"})}
            assert a.auth_failures == b.auth_failures == 0
            assert a.metrics.errors == b.metrics.errors == 0
        finally:
            await stop_all([a, b])

    run(main())


@pytest.mark.parametrize("intruder", ["wrong key", "no key", "other cluster"])
def test_a_node_without_the_key_is_refused_and_changes_nothing(intruder: str) -> None:
    async def main() -> None:
        b = sealed_node("b")
        await b.start()
        b.counter("hits").increment()
        kwargs: dict[str, Any] = {
            "wrong key": {"secret": OTHER},
            "no key": {},
            "other cluster": {"secret": SECRET, "cluster": "red"},
        }[intruder]
        x = Node("x", gossip_interval=FAST, peers=[b.url], **kwargs)
        await x.start()
        try:
            x.counter("hits").increment(100)
            x.set("junk").add("x")
            await eventually(lambda: b.auth_failures >= 3, "b to refuse x three times")
            assert b.value == {"hits": 1}
            assert x.value == {"hits": 100, "junk": frozenset({"x"})}  # nothing came back
            assert b.metrics.rounds == 0
            assert b.peers == []  # x was never learned
        finally:
            await stop_all([b, x])

    run(main())


def test_a_plain_body_gets_a_clear_401_and_a_sealed_one_to_a_plain_node_a_415() -> None:
    async def main() -> None:
        sealed, plain = sealed_node("s"), Node("p", gossip_interval=FAST)
        await started(sealed, plain)
        try:
            status, reason = await post(sealed.url, request_of(plain), MSGPACK)
            assert (status, reason) == (
                401,
                f"this node's cluster has a secret: send {SEALED} bodies",
            )
            status, reason = await post(plain.url, b"\x01" * 80, SEALED)
            assert status == 415 and "this node has no secret" in reason
            assert sealed.auth_failures == 1 and plain.auth_failures == 0
        finally:
            await stop_all([sealed, plain])

    run(main())


def test_a_replayed_a_tampered_and_a_stale_capture_are_refused() -> None:
    async def main() -> None:
        b = sealed_node("b")
        await b.start()
        a = sealed_node("a")  # never started: its channel seals requests made by hand
        channel = a._channel
        assert channel is not None and b.keyring is not None
        try:
            a.counter("hits").increment()
            first = channel.seal_request(request_of(a))[0]
            assert (await post(b.url, first))[0] == 200
            assert b.metrics.rounds == 1

            status, reason = await post(b.url, first)  # the same capture again
            assert (status, reason) == (401, "authentication failed: replayed: seq 1 was "
                                             "accepted before")  # fmt: skip
            second = channel.seal_request(request_of(a))[0]
            for at in (0, 20, len(second) // 2, -1):  # version, seq, body, tag
                tampered = bytearray(second)
                tampered[at] ^= 0x40
                status, reason = await post(b.url, bytes(tampered))
                assert status == 401 and "authentication failed" in reason, at
            stale = Channel(Keyring(SECRET, cluster="default"), "a", clock=lambda: 1e9)
            status, reason = await post(b.url, stale.seal_request(request_of(a))[0])
            assert status == 401 and "outside the window" in reason
            status, reason = await post(b.url, b"\x00" * 200)
            assert status == 401 and "envelope version 0" in reason
            assert b.metrics.rounds == 1 and b.value == {}  # nothing was decoded or merged

            # The refusals recorded nothing: the untampered second capture still passes.
            assert (await post(b.url, second))[0] == 200
            assert b.metrics.rounds == 2
            assert b.auth_failures == b.metrics.errors == 7
            status, text = await get(b.url, "/metrics", b.keyring.primary.token)
            assert "agentsync_auth_failures_total 7" in text
        finally:
            await stop_all([a, b])

    run(main())


def test_a_member_may_not_speak_as_another_node() -> None:
    """The message inside an envelope must name the node that sealed it."""

    async def main() -> None:
        b = sealed_node("b")
        await b.start()
        a = sealed_node("a")  # never started: its requests are made by hand
        mallory = Channel(Keyring(SECRET, cluster="default"), "mallory")  # holds the key
        try:
            a.counter("hits").increment()
            status, reason = await post(b.url, mallory.seal_request(request_of(a))[0])
            assert status == 400
            assert reason == "the message names sender 'a', its envelope 'mallory'"
            assert b.metrics.rounds == 0 and b.value == {} and b.metrics.errors == 1
            assert a._channel is not None
            assert (await post(b.url, a._channel.seal_request(request_of(a))[0]))[0] == 200
            assert b.metrics.rounds == 1  # the same request, sealed by its sender, is taken
        finally:
            await stop_all([a, b])

    run(main())


def test_a_reply_must_name_the_node_that_sealed_it() -> None:
    """A key holder answering as another node: the requester refuses it and merges nothing."""

    async def main() -> None:
        b = sealed_node("b", peers=["http://127.0.0.1:9"])  # a fixed list: b never dials a
        await b.start()
        assert b._server is not None and b.keyring is not None
        b._server._channel = Channel(b.keyring, "mallory")  # seals b's answers as mallory
        a = sealed_node("a", peers=[b.url])
        failures = recorded_failures(a)
        await a.start()
        try:
            b.counter("hits").increment()
            await eventually(lambda: len(failures) >= 2, "a to refuse two replies")
            assert a.value == {} and a.metrics.errors >= 2
        finally:
            await stop_all([a, b])

    run(main())


def test_a_reply_that_fails_authentication_fails_the_exchange() -> None:
    """A peer answering with a forged reply: the requester refuses it and merges nothing."""

    async def main() -> None:
        async def forged(request: aiohttp.web.Request) -> aiohttp.web.Response:
            await request.read()
            return aiohttp.web.Response(body=b"\x01\x02" + b"\x00" * 100, content_type=SEALED)

        app = aiohttp.web.Application()
        app.router.add_post("/v1/sync", forged)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        a = sealed_node("a", peers=[f"http://127.0.0.1:{port}"])
        failures = recorded_failures(a)
        await a.start()
        try:
            a.counter("hits").increment()
            await eventually(lambda: len(failures) >= 2, "a to fail two exchanges")
            assert a.value == {"hits": 1}
        finally:
            await stop_all([a])
            await runner.cleanup()

    run(main())


def test_state_and_metrics_need_the_bearer_token_and_health_says_only_alive() -> None:
    async def main() -> None:
        node = sealed_node("n")
        await node.start()
        node.counter("hits").increment()
        keyring = node.keyring
        assert keyring is not None
        token = keyring.primary.token
        try:
            for path in ("/v1/state", "/metrics"):
                for wrong in (None, "", "nope", Keyring(OTHER, cluster="default").primary.token):
                    status, text = await get(node.url, path, wrong)
                    assert status == 401, (path, wrong)
                    assert "bearer token" in text
                assert (await get(node.url, path, token))[0] == 200
            assert await get(node.url, "/v1/health") == (200, {"alive": True})
            status, health = await get(node.url, "/v1/health", token)
            assert status == 200 and health["node_id"] == "n"
            status, state = await get(node.url, "/v1/state", token)
            assert state["names"]["hits"]["value"] == 1
            assert node.auth_failures == 8
        finally:
            await stop_all([node])

    run(main())


def test_two_clusters_sharing_a_secret_cannot_talk() -> None:
    async def main() -> None:
        blue = sealed_node("blue-1", cluster="blue")
        await blue.start()
        red = sealed_node("red-1", cluster="red", peers=[blue.url])
        await red.start()
        blue.add_peer(red.url)
        try:
            blue.counter("b").increment()
            red.counter("r").increment()
            await eventually(
                lambda: blue.auth_failures >= 2 and red.auth_failures >= 2, "both to refuse"
            )
            assert blue.value == {"b": 1} and red.value == {"r": 1}
            status, _ = await get(blue.url, "/v1/state", red.keyring.primary.token)  # type: ignore[union-attr]
            assert status == 401
        finally:
            await stop_all([blue, red])

    run(main())


@pytest.mark.parametrize(
    ("secret", "error", "match"),
    [
        (b"short", ValueError, "16 to 1024 bytes"),
        ("pw", ValueError, "8 characters or more"),
        (12345, TypeError, "bytes or a str passphrase"),
        (b"x" * 2000, ValueError, "16 to 1024 bytes"),
    ],
)
def test_a_bad_secret_is_refused_before_anything_starts(
    secret: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Node("n", secret=secret)  # type: ignore[arg-type]


def test_a_passphrase_secret_works_like_bytes() -> None:
    async def main() -> None:
        a = sealed_node("a", secret="correct horse battery staple")
        b = sealed_node("b", secret="correct horse battery staple")
        await started(a, b)
        try:
            a.add_peer(b.url)
            b.counter("c").increment()
            await converge([a, b])
        finally:
            await stop_all([a, b])

    run(main())


def test_three_nodes_rotate_keys_while_writing_with_no_failed_round() -> None:
    """install everywhere, then use everywhere, then remove everywhere; writes never stop."""

    async def main() -> None:
        rng = random.Random(6)
        nodes = [sealed_node(f"n{i}") for i in range(3)]
        await started(*nodes)
        for node in nodes:
            for other in nodes:
                if other is not node:
                    node.add_peer(other.url)
        failures = [recorded_failures(node) for node in nodes]
        stop = asyncio.Event()
        written = 0

        async def write() -> None:
            nonlocal written
            while not stop.is_set():
                rng.choice(nodes).set("items").add(f"w{written}")
                written += 1
                await asyncio.sleep(0.005)

        def after_rounds(count: int) -> Callable[[], bool]:
            marks = [node.metrics.rounds + count for node in nodes]
            return lambda: all(n.metrics.rounds >= m for n, m in zip(nodes, marks, strict=True))

        writer = asyncio.create_task(write())
        try:
            await eventually(after_rounds(5), "rounds before the rotation")
            for step in ("install", "use", "remove"):
                for node in nodes:
                    keyring = node.keyring
                    assert keyring is not None
                    if step == "install":
                        keyring.install(OTHER)
                    elif step == "use":
                        keyring.use(OTHER)
                    else:
                        keyring.remove(SECRET)
                    await eventually(after_rounds(2), f"rounds after {step} on {node.node_id}")
                await eventually(after_rounds(3), f"rounds after every node did {step}")
            stop.set()
            await writer
            await converge(nodes)
            assert len(nodes[0].value["items"]) == written > 20
            for node, failed in zip(nodes, failures, strict=True):
                assert failed == [], node.node_id
                assert node.auth_failures == 0
                assert node.metrics.errors == 0
                assert node.keyring is not None
                assert node.keyring.key_ids == [Keyring(OTHER, cluster="default").primary.name]
        finally:
            stop.set()
            await stop_all(nodes)

    run(main())
