"""A stand-in agent on one test host, next to that host's ``agentsync serve``.

``agentsync serve`` has no write API (agents write through a Node of their
own), so each test host runs this agent as well:
``python -m tests.netns_agent URL CLUSTER``, where URL is the host's node
on loopback. The agent's Node peers with that node alone. It reads commands
on stdin, one per line, and answers each with one JSON line on stdout:

- ``add NAME ITEM...``: add the items to the set NAME, in the agent's own
  node, which gossips them to the host's node; answers ``{"ok": true}``.
- ``get PATH``: the host node's JSON answer to ``GET PATH``, or
  ``{"error": "..."}`` when it cannot be had (the node is down, say).

It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

from agentsync import Node

GET_TIMEOUT_S = 2.0
GOSSIP_INTERVAL_S = 0.05


async def answer(line: str, node: Node, url: str, session: aiohttp.ClientSession) -> Any:
    command, *args = line.split()
    if command == "add" and args:
        name, *items = args
        with node.batch():
            for item in items:
                node.set(name).add(item)
        return {"ok": True}
    if command == "get" and len(args) == 1:
        try:
            async with session.get(url + args[0]) as response:
                response.raise_for_status()
                return await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": f"unknown command {line!r}"}


async def main(url: str, cluster: str) -> None:
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=GET_TIMEOUT_S)
    async with (
        Node(cluster=cluster, peers=[url], gossip_interval=GOSSIP_INTERVAL_S) as node,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        print(json.dumps({"ready": node.node_id}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip():
                print(json.dumps(await answer(line, node, url, session)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
