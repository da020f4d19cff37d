"""Real nodes on loopback, in one process: convergence, catch-up, semantics, 4xx.

Every wait polls with a deadline (``eventually``); no test sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import aiohttp
import msgpack

from agentsync import Node
from agentsync.discovery import MembershipConfig
from agentsync.node import Change
from agentsync.sync import SyncEngine, encode_message
from tests.node.helpers import converge, eventually, run, started, stop_all

FAST = 0.05
"""A gossip interval that keeps the tests quick."""


def test_three_nodes_in_a_line_converge_transitively() -> None:
    async def main() -> None:
        c = Node("c", gossip_interval=FAST)
        await c.start()
        b = Node("b", gossip_interval=FAST, peers=[c.url])
        await b.start()
        a = Node("a", gossip_interval=FAST, peers=[b.url])
        await a.start()
        nodes = [a, b, c]
        try:
            a.counter("hits").increment(2)
            c.set("seen").add("from-c")
            b.register("who").set("b")
            await converge(nodes)
            assert c.value == {"hits": 2, "seen": frozenset({"from-c"}), "who": "b"}
            # still a line: b has a fixed peer list, so only c (given none) takes the
            # introduction of the node that contacts it, and nobody meets across b
            assert a.peers == [b.url] and b.peers == [c.url] and c.peers == [b.url]
        finally:
            await stop_all(nodes)

    run(main())


def test_concurrent_writes_follow_the_documented_semantics() -> None:
    async def main() -> None:
        a, b = Node("a", gossip_interval=FAST), Node("b", gossip_interval=FAST)
        await started(a, b)
        try:
            a.add_peer(b.url)
            b.add_peer(a.url)
            a.set("s").add("x")
            await converge([a, b])
            # Partitioned: a removes x while b adds it again; the add wins.
            a.remove_peer(b.url)
            b.remove_peer(a.url)
            a.set("s").remove("x")
            b.set("s").add("x")
            a.flag("f").enable()
            b.flag("f").enable()
            a.flag("f").disable()
            a.counter("n").increment(3)
            b.counter("n").decrement(1)
            a.register("r").set("first")
            await asyncio.sleep(0.002)  # a later HLC timestamp, not a wait for convergence
            b.register("r").set("second")
            a.add_peer(b.url)
            b.add_peer(a.url)
            await converge([a, b])
            assert a.value["s"] == frozenset({"x"})  # add-wins
            assert a.value["f"] is True  # enable-wins
            assert a.value["n"] == 2
            assert a.value["r"] == "second"  # last writer wins
        finally:
            await stop_all([a, b])

    run(main())


def test_a_node_that_joins_late_catches_up() -> None:
    async def main() -> None:
        a = Node("a", gossip_interval=FAST)
        await a.start()
        late = None
        try:
            for i in range(300):
                a.set("items").add(f"item-{i}")
            a.counter("c").increment(7)
            late = Node("late", gossip_interval=FAST, peers=[a.url])
            await late.start()
            await converge([a, late])
            assert len(late.value["items"]) == 300
        finally:
            await stop_all([a, late])

    run(main())


def test_a_large_state_arrives_in_bounded_pieces() -> None:
    async def main() -> None:
        a = Node("a", gossip_interval=FAST)
        await a.start()
        late = None
        try:
            rng = random.Random(7)
            with a.batch():
                for i in range(1200):  # 3.6 MB of hex, about 2 MB deflated: 2+ messages
                    a.lwwmap("blobs")[f"k{i}"] = rng.randbytes(1500).hex()
            late = Node("late", gossip_interval=FAST, peers=[a.url])
            await late.start()
            await converge([a, late], "a 3.6 MB state caught up")
            assert a.metrics.full_state_fallbacks >= 1
            assert late.metrics.bytes_received > 1 << 20
        finally:
            await stop_all([a, late])

    run(main(), timeout=90)


def test_a_stopped_node_catches_up_and_keeps_its_new_writes() -> None:
    async def main() -> None:
        a, b = Node("a", gossip_interval=FAST), Node("b", gossip_interval=FAST)
        await started(a, b)
        a.add_peer(b.url)
        b.add_peer(a.url)
        back = None
        try:
            a.counter("n").increment()
            await converge([a, b])
            await b.stop()
            a.counter("n").increment(10)  # b is down: a keeps working
            a.set("s").add("while-b-was-down")
            assert a.counter("n").value == 11
            await a.sync_now()  # a failed exchange returns, it does not hang
            # b comes back as a new process with the same id and no data.
            back = Node("b", gossip_interval=FAST, peers=[a.url])
            await back.start()
            a.add_peer(back.url)
            await converge([a, back])
            back.counter("n").increment(100)  # must not reuse a dot of the old b
            await converge([a, back])
            assert a.counter("n").value == 111
        finally:
            await stop_all([a, b if back is None else back])

    run(main())


def test_changes_report_remote_merges() -> None:
    async def main() -> None:
        a, b = Node("a", gossip_interval=FAST), Node("b", gossip_interval=FAST)
        await started(a, b)
        a.add_peer(b.url)
        got: list[Change] = []
        b.subscribe(got.append)
        try:
            stream = b.changes()
            first = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0)  # lets the consumer register its queue
            a.counter("c").increment()
            change = await asyncio.wait_for(first, 10)
            assert change == Change(frozenset({"c"}), local=False)
            await eventually(lambda: bool(got), "the subscriber saw the merge")
            assert got[0].local is False
            await stream.aclose()
        finally:
            await stop_all([a, b])

    run(main())


def test_sync_now_exchanges_with_every_peer_and_returns() -> None:
    async def main() -> None:
        nodes = [Node(f"n{i}", gossip_interval=30) for i in range(3)]  # no background rounds
        await started(*nodes)
        hub, *spokes = nodes
        for spoke in spokes:
            hub.add_peer(spoke.url)
        hub.add_peer("http://127.0.0.1:9")  # nothing listens there
        try:
            for i, spoke in enumerate(spokes):
                spoke.counter("c").increment(i + 1)
            started_at = time.monotonic()
            await hub.sync_now()
            assert time.monotonic() - started_at < 10
            assert hub.counter("c").value == 3
            await hub.sync_now()
            assert all(spoke.counter("c").value == 3 for spoke in spokes)
        finally:
            await stop_all(nodes)

    run(main())


def test_sync_now_waits_out_an_exchange_under_way_and_then_runs_its_own() -> None:
    """An exchange that left before a write does not stand in for sync_now's (in a
    notebook the first probe is often still on the wire when the next cell syncs)."""

    async def main() -> None:
        async with Node("a", gossip_interval=30) as a, Node("b", peers=[a.url]) as b:
            deadline = time.monotonic() + 10
            while not b._inflight:  # until b's first probe of a is on the wire
                assert time.monotonic() < deadline, "b never probed a"
                await asyncio.sleep(0)
            a.counter("c").increment()
            b.counter("c").increment()
            await b.sync_now()
            assert a.counter("c").value == b.counter("c").value == 2

    run(main())


def test_start_background_is_thread_safe() -> None:
    a = Node.start_background("a", gossip_interval=FAST)
    b = Node.start_background("b", gossip_interval=FAST, peers=[a.url])
    try:
        threads = [
            threading.Thread(target=lambda k=k: [b.counter("c").increment() for _ in range(200)])
            for k in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert b.counter("c").value == 800
        end = time.monotonic() + 20
        while a.counter("c").value != 800:
            assert time.monotonic() < end, "a never saw b's writes"
            time.sleep(0.02)
    finally:
        b.stop()
        a.stop()
    assert a._thread is None and b._thread is None


def test_writes_from_another_thread_are_pushed_well_before_the_next_gossip_round() -> None:
    """The eager push (``_wake_push``) carries a write from an agent's thread in a
    fraction of the interval, again after each push; a write while a wake is pending
    rides with it. Rounds and probes are 8 s and 60 s apart and the deadlines shorter,
    so neither can be what delivered them."""
    interval = 8.0  # the push waits a quarter of it (2 s) after each push
    quiet = MembershipConfig(probe_interval=60.0)
    a = Node.start_background("a", gossip_interval=interval, membership=quiet)
    b = Node.start_background("b", gossip_interval=interval, membership=quiet, peers=[a.url])
    try:
        end = time.monotonic() + 20
        while a.members() == [] or b.members()[0].last_contact is None:
            assert time.monotonic() < end, "the first exchange never happened"
            time.sleep(0.02)
        for element in ("first", "second"):
            began = time.monotonic()
            b.set("s").add(element)
            b.set("s").add(f"{element}, while a wake is pending")
            while a.set("s").value != b.set("s").value:
                assert time.monotonic() - began < interval - 3, f"{element} was not pushed"
                time.sleep(0.02)
    finally:
        b.stop()
        a.stop()


def test_the_server_refuses_bad_requests_and_changes_nothing() -> None:
    async def main() -> None:
        a = Node("a", cluster="blue")
        await a.start()
        a.counter("c").increment()
        before = (a.value, a._engine.state.context, a._engine.head)
        other = SyncEngine("intruder", cluster="green")
        wrong_cluster = encode_message(other.request(None))
        forged = msgpack.packb([1, 0, "x", "blue", 1, 1, None, None, [b"junk"], None, None])
        cases = [
            (b"\x00\xff not msgpack", 400),
            (msgpack.packb([1, 2, 3]), 400),
            (forged, 400),
            (wrong_cluster, 409),
            (b"x" * (2 << 20), 413),
        ]
        try:
            async with aiohttp.ClientSession() as session:
                for body, status in cases:
                    async with session.post(
                        f"{a.url}/v1/sync",
                        data=body,
                        headers={"Content-Type": "application/x-msgpack"},
                    ) as response:
                        text = await response.text()
                        assert response.status == status, (status, text)
                        assert text  # a reason
                async with session.get(f"{a.url}/v1/health") as response:
                    health = await response.json()
                    assert health["node_id"] == "a" and health["cluster"] == "blue"
                async with session.get(f"{a.url}/v1/state") as response:
                    state = await response.json()
                    assert state["names"] == {"c": {"type": "PNCounter", "value": 1}}
                async with session.get(f"{a.url}/metrics") as response:
                    text = await response.text()
                    for metric in (
                        "agentsync_sync_rounds_total",
                        "agentsync_sync_bytes_sent_total",
                        "agentsync_sync_bytes_received_total",
                        "agentsync_sync_errors_total",
                        "agentsync_full_state_fallbacks_total",
                        "agentsync_peers",
                        "agentsync_delta_buffer_bytes",
                    ):
                        assert f"\n{metric} " in "\n" + text, metric
            assert (a.value, a._engine.state.context, a._engine.head) == before
            assert a.metrics.errors >= len(cases)
        finally:
            await a.stop()

    run(main())


def test_a_node_object_restarts_on_its_url_and_catches_up() -> None:
    async def main() -> None:
        a, b = Node("a", gossip_interval=FAST), Node("b", gossip_interval=FAST)
        await started(a, b)
        a.add_peer(b.url)
        b.add_peer(a.url)
        try:
            url = b.url
            await b.stop()
            a.set("s").add("while-b-was-down")
            b.set("s").add("written-offline")  # writes work on a stopped node too
            await b.start()
            assert b.url == url
            await converge([a, b])
            assert a.set("s").value == {"while-b-was-down", "written-offline"}
        finally:
            await stop_all([a, b])

    run(main())
