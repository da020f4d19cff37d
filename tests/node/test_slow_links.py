"""A slow or distant link: the exchange timeout is the node's to choose.

A stand-in link on loopback (an aiohttp proxy that holds each sync request
for a while before it forwards it) puts a peer 1.5 s away; hosts in network
namespaces, one of them shaped to 2 Mbit/s, make a real slow link.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agentsync import Node
from agentsync.discovery import MemberState
from tests.netns import Hosts, netns_hosts
from tests.netns_nodes import HostNode, wait_for
from tests.node.helpers import run, stop_all

__all__ = ["netns_hosts"]  # the fixture, imported for pytest

LINK_DELAY_S = 1.5
"""How long the stand-in link holds a request: a slow link's latency, not a wait for anything."""


@asynccontextmanager
async def slow_link(target: str, delay: float) -> AsyncIterator[str]:
    """A URL whose sync requests reach ``target`` ``delay`` seconds late."""
    async with aiohttp.ClientSession() as session:

        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            await asyncio.sleep(delay)
            async with session.post(
                target + request.path, data=body, headers={"Content-Type": request.content_type}
            ) as reply:
                return web.Response(
                    body=await reply.read(), status=reply.status, content_type=reply.content_type
                )

        app = web.Application()
        app.router.add_post("/v1/sync", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


def test_a_peer_beyond_the_exchange_timeout_is_reached_with_a_longer_one() -> None:
    async def main() -> None:
        # Given only peers (a dead one), the writer keeps exactly them: it never
        # learns the readers, so what they hold came through the slow link.
        writer = Node("writer", peers=["http://127.0.0.1:9"], gossip_interval=3600)
        await writer.start()
        writer.set("notes").add("far away")
        near = far = None
        try:
            async with slow_link(writer.url, LINK_DELAY_S) as url:
                near = Node("near", peers=[url], gossip_interval=3600)  # 1 s: the default
                far = Node("far", peers=[url], gossip_interval=3600, exchange_timeout=5.0)
                await near.start()
                await far.start()
                await near.sync_now()
                assert near.value == {}, "the default timeout gives up before the reply"
                [member] = near.members()
                assert member.last_contact is None and member.state is MemberState.SUSPECT
                await far.sync_now()
                assert far.value == {"notes": {"far away"}}
        finally:
            await stop_all([far, near, writer])

    run(main())


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (601, ValueError),
     (True, TypeError), ("5", TypeError)],
)  # fmt: skip
def test_a_bad_exchange_timeout_is_refused(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="exchange_timeout"):
        Node("n", exchange_timeout=timeout)  # type: ignore[arg-type]


# -- a real slow link: hosts in namespaces, the sync port's host shaped to 2 Mbit/s ----------

LINK_RATE = "2mbit"
BIG_ITEMS = 16000
"""Random elements, about 0.5 MB encoded: some 2 s at 2 Mbit/s, past the default 1 s."""
CATCH_UP_S = 60.0
SEED = 2026


@pytest.mark.netns
def test_a_host_behind_a_2_mbit_link_catches_up_with_a_longer_exchange_timeout(
    netns_hosts: Callable[..., Hosts], tmp_path: Path
) -> None:
    """h1 holds ~0.5 MB encoded and sends at 2 Mbit/s (tbf on its link); h2 starts empty.

    Both ends take ``--exchange-timeout 20``: whichever starts an exchange
    sets its timeout, and either may carry the catch-up. It takes about
    4 s. With the default 1 s every exchange is cut short, and the state
    crawls across in about 40 s, only in requests whose sender had given up
    but whose body the receiver still read within its 10 s bound.
    """
    hosts = netns_hosts(2)
    subprocess.run(
        ["ip", "netns", "exec", hosts.ns(1), "tc", "qdisc", "add", "dev", "eth0", "root",
         "tbf", "rate", LINK_RATE, "burst", "32kbit", "latency", "400ms"],
        check=True, capture_output=True,
    )  # fmt: skip
    slow = ("--exchange-timeout", "20")
    h1 = HostNode(hosts, 1, tmp_path, args=slow)
    rng = random.Random(SEED)
    items = {f"{k:05d}-{rng.randbytes(24).hex()}" for k in range(BIG_ITEMS)}
    h1.add("big", *sorted(items))
    wait_for(lambda: len(h1.items("big")) == BIG_ITEMS, [h1], "h1 holds the set", CATCH_UP_S)
    h2 = HostNode(hosts, 2, tmp_path, args=("--peer", h1.url(), *slow))
    took = wait_for(lambda: h2.items("big") == items, [h1, h2], "h2 catches up", CATCH_UP_S)
    assert took > 1.0, f"the link was not slow: h2 caught up in {took:.2f} s"
