"""A slow or distant link: the exchange timeout is the node's to choose.

A stand-in link on loopback (an aiohttp proxy that holds each sync request
for a while before it forwards it) puts a peer 1.5 s away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from agentsync import Node
from agentsync.discovery import MemberState
from tests.node.helpers import run, stop_all

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
