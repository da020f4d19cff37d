"""Membership on real Nodes on loopback: seeds, peer exchange, and failure detection.

Every wait polls with a deadline (``eventually``); no test sleeps and hopes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest

from agentsync import Node
from agentsync.discovery import MembershipConfig, MemberState
from agentsync.sync import SyncEngine, decode_message, encode_message
from tests.node.helpers import converge, eventually, run, started, stop_all

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


def test_nodes_that_share_one_seed_learn_each_other_through_it() -> None:
    """The seed learns each joiner from its introduction, and passes it on."""

    async def main() -> None:
        seed = Node("seed", gossip_interval=FAST)  # configured with nothing: it takes introductions
        await seed.start()
        b = Node("b", gossip_interval=FAST, seeds=[seed.url])
        c = Node("c", gossip_interval=FAST, seeds=[seed.url])
        nodes = await started(b, c)
        nodes.append(seed)
        try:
            await eventually(lambda: set(seed.peers) == {b.url, c.url}, "the seed learns b and c")
            await eventually(lambda: states(b).get(c.url) is MemberState.ALIVE, "b learns c")
            await eventually(lambda: states(c).get(b.url) is MemberState.ALIVE, "c learns b")
        finally:
            await stop_all(nodes)

    run(main())


def request_naming(sender: str, members: tuple[tuple[str, str], ...]) -> bytes:
    engine = SyncEngine(sender)
    return encode_message(replace(engine.request(None), members=members))


def test_a_wildcard_introduction_is_taken_at_the_address_the_request_came_from() -> None:
    node = Node("n")
    body = request_naming("x", (("x", "http://0.0.0.0:7000"), ("y", "http://[::]:7001")))
    reply = decode_message(node.handle_sync(body, remote="10.1.2.3"))
    assert reply.members == ()
    assert node.peers == ["http://10.1.2.3:7000"]  # y's wildcard names no host: dropped
    node.handle_sync(body, remote="::ffff:10.1.2.4")  # a dual-stack socket's view of IPv4
    assert node.peers == ["http://10.1.2.3:7000", "http://10.1.2.4:7000"]
    node.handle_sync(body)  # no remote address: nothing to take the wildcard at
    assert len(node.peers) == 2


def test_loopback_urls_reach_only_peers_on_loopback() -> None:
    node = Node("n")
    naming = request_naming("x", (("x", "http://127.0.0.1:7000"), ("y", "http://localhost:7001")))
    node.handle_sync(naming, remote="10.1.2.3")
    assert node.peers == []  # they would name the wrong host
    node.handle_sync(naming, remote="127.0.0.1")
    assert node.peers == ["http://127.0.0.1:7000", "http://localhost:7001"]
    node._membership.on_success("http://127.0.0.1:7000", "x", time.monotonic())  # reached
    asking = request_naming("z", ())
    assert decode_message(node.handle_sync(asking, remote="10.1.2.5")).members == ()
    told = decode_message(node.handle_sync(request_naming("w", ()), remote="127.0.0.1")).members
    assert told == (("x", "http://127.0.0.1:7000"),)


def test_a_fixed_peer_list_takes_no_introductions() -> None:
    node = Node("n", peers=["http://127.0.0.1:9"])
    node.handle_sync(request_naming("x", (("x", "http://127.0.0.1:7000"),)), remote="127.0.0.1")
    assert node.peers == ["http://127.0.0.1:9"]


def test_a_node_given_itself_as_a_seed_drops_that_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentsync.node")

    async def main() -> None:
        node = Node("n", gossip_interval=FAST)
        await node.start()
        try:
            itself = f"http://localhost:{node.port}"  # its own URL by another name
            node._add_member(itself, "seed")
            await eventually(lambda: node.peers == [], "the node drops its own URL")
            assert f"{itself} is this node itself" in caplog.text
        finally:
            await node.stop()

    run(main())


def test_a_node_alive_at_one_url_is_not_added_again_at_another() -> None:
    """A host on two subnets is named at both by different peers: one member is enough."""
    node = Node("n")
    first = request_naming("x", (("x", "http://10.1.0.3:7000"),))
    node.handle_sync(first, remote="10.1.0.9")
    node._membership.on_success("http://10.1.0.3:7000", "x", time.monotonic())  # reached
    node.handle_sync(request_naming("y", (("x", "http://10.2.0.3:7000"),)), remote="10.2.0.9")
    assert node.peers == ["http://10.1.0.3:7000"]
    node._membership.on_failure("http://10.1.0.3:7000", time.monotonic())  # no longer alive
    node.handle_sync(request_naming("z", (("x", "http://10.2.0.3:7000"),)), remote="10.2.0.9")
    assert node.peers == ["http://10.1.0.3:7000", "http://10.2.0.3:7000"]


def test_the_membership_timings_are_the_nodes_to_choose() -> None:
    """A learned member dead for ``remove_after`` is forgotten; a seed is kept."""
    quick = MembershipConfig(suspect_timeout=0.3, remove_after=0.3)

    async def main() -> None:
        c = Node("c", gossip_interval=FAST)
        await c.start()
        b = Node("b", gossip_interval=FAST, peers=[c.url])
        await b.start()
        a = Node("a", gossip_interval=FAST, seeds=[b.url], membership=quick)
        await a.start()
        try:
            await eventually(lambda: states(a).get(c.url) is MemberState.ALIVE, "a learns c")
            await stop_all([b, c])
            await eventually(lambda: a.peers == [b.url], "a forgets c, not its seed b")
            # b's last answer may have come a little after c's: it is judged dead in its turn.
            await eventually(lambda: states(a)[b.url] is MemberState.DEAD, "the seed b is dead")
            assert a.peers == [b.url], "and kept"
            assert "c" not in a._engine.peers  # nor does c's old ack pin a's delta buffer
            a.remove_peer(b.url)
            assert "b" not in a._engine.peers and a.peers == []
        finally:
            await stop_all([a, b, c])

    run(main())
    with pytest.raises(TypeError):
        Node("a", membership={"remove_after": 1})  # type: ignore[arg-type]


def test_a_flood_of_introductions_adds_a_bounded_number_of_hints() -> None:
    """Each message names 16 new members; one address may leave 16 hints at a time, and
    every address together 128 (``MembershipConfig``), so honest introducers still get in."""
    node = Node("n")
    for n in range(100):
        named = tuple((f"bogus-{n}-{i}", f"http://10.9.{n}.{i}:7000") for i in range(16))
        node.handle_sync(request_naming(f"rogue-{n}", named), remote="10.1.2.3")
    assert len(node.peers) == 16
    node.handle_sync(request_naming("y", (("y", "http://10.5.5.5:7000"),)), remote="10.5.5.5")
    assert "http://10.5.5.5:7000" in node.peers
    for n in range(20):
        named = tuple((f"many-{n}-{i}", f"http://10.8.{n}.{i}:7000") for i in range(16))
        node.handle_sync(request_naming(f"many-{n}", named), remote=f"10.7.0.{n}")
    assert len(node.peers) == MembershipConfig().max_hints
