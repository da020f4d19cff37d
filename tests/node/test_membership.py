"""Membership on real Nodes on loopback: seeds, peer exchange, and failure detection.

Every wait polls with a deadline (``eventually``); no test sleeps and hopes.
"""

from __future__ import annotations

import time

import pytest

from agentsync import Node
from agentsync.discovery import MemberState
from tests.node.helpers import converge, eventually, run, stop_all

FAST = 0.05
"""A gossip interval that keeps the tests quick."""
DETECTION_S = 5.0
"""The documented bound on detecting a dead peer (docs/membership.md), with the defaults."""


def states(node: Node) -> dict[str, MemberState]:
    return {member.url: member.state for member in node.members()}


async def seeded_line() -> list[Node]:
    """a has only the seed b, and b only the peer c: a can learn c from b alone."""
    c = Node("c", gossip_interval=FAST)
    await c.start()
    b = Node("b", gossip_interval=FAST, peers=[c.url])
    await b.start()
    a = Node("a", gossip_interval=FAST, seeds=[b.url])
    await a.start()
    return [a, b, c]


def test_a_node_learns_peers_from_its_seed_by_peer_exchange() -> None:
    async def main() -> None:
        a, b, c = nodes = await seeded_line()
        try:
            c.counter("hits").increment()
            await eventually(lambda: c.url in a.peers, "a learns c from its seed b")
            await eventually(lambda: states(a).get(c.url) is MemberState.ALIVE, "a judges c alive")
            await converge(nodes)
            ids = {member.url: member.node_id for member in a.members()}
            assert ids == {b.url: "b", c.url: "c"}
            peers = {p["url"]: p["state"] for p in a.health()["peers"]}
            assert peers == {b.url: "alive", c.url: "alive"}
        finally:
            await stop_all(nodes)

    run(main())


def test_a_stopped_peer_turns_suspect_then_dead_and_alive_when_it_returns() -> None:
    async def main() -> None:
        b = Node("b")  # default timings: the documented bound applies
        await b.start()
        a = Node("a", peers=[b.url])
        await a.start()
        try:
            await eventually(lambda: states(a).get(b.url) is MemberState.ALIVE, "b alive")
            await b.stop()
            stopped = time.monotonic()
            await eventually(
                lambda: states(a).get(b.url) is MemberState.DEAD,
                "b dead",
                deadline=DETECTION_S + 3.0,
            )
            took = time.monotonic() - stopped
            assert took <= DETECTION_S, f"detected in {took:.2f} s, documented {DETECTION_S} s"
            await b.start()  # the same Node object keeps its URL
            await eventually(lambda: states(a).get(b.url) is MemberState.ALIVE, "b welcomed back")
        finally:
            await stop_all([a, b])

    run(main())


def test_seeds_are_checked_like_peers() -> None:
    with pytest.raises(TypeError):
        Node("a", seeds="http://127.0.0.1:1")
    with pytest.raises(ValueError):
        Node("a", seeds=["not a url"])
    with pytest.raises(TypeError):
        Node("a", discovery=1)  # type: ignore[arg-type]


def test_an_idle_exchange_names_no_members_once_each_peer_was_told() -> None:
    """Peer exchange sends news, not samples: idle links stay under 100 bytes both ways."""

    async def main() -> None:
        a, b, _ = nodes = await seeded_line()
        try:
            await eventually(lambda: len(a.peers) == 2, "a learns c")
            await converge(nodes)
            await a.sync_now()  # everything a was to tell or be told is told now
            await b.sync_now()
            m = a.metrics
            bytes_before, rounds_before = m.bytes_sent + m.bytes_received, m.rounds
            for _ in range(5):
                await a.sync_now()
            m = a.metrics  # each round is one exchange, either side starting it
            spent, rounds = m.bytes_sent + m.bytes_received - bytes_before, m.rounds - rounds_before
            assert rounds >= 10
            assert spent / rounds < 100, f"{spent} bytes over {rounds} idle exchanges"
        finally:
            await stop_all(nodes)

    run(main())
