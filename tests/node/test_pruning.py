"""A running Node prunes (issue 5): stable tombstones, departed replicas, returnees.

Real nodes on loopback with small timings (``CONFIG``, ``QUICK``); every wait
polls with a deadline. Which replica ids and values the nodes hold is
checked on each node's engine.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from agentsync import Node
from agentsync.crdt import LWWMap
from agentsync.discovery import MembershipConfig
from agentsync.sync import PruningConfig
from tests.node.helpers import converge, eventually, run, same_values, stop_all

FAST = 0.05
CONFIG = PruningConfig(interval=0.1, prune_after=0.5, marker_ttl=1000.0)
QUICK = MembershipConfig(
    probe_interval=0.1, suspect_timeout=0.2, retry_initial=0.1, retry_max=0.2, remove_after=0.3
)
"""A stopped peer is dead within about half a second and removed 0.3 s later."""


def node(node_id: str | None = None, **kwargs: object) -> Node:
    return Node(node_id, gossip_interval=FAST, pruning=CONFIG, membership=QUICK, **kwargs)  # type: ignore[arg-type]


def held_anywhere(replica_id: str, nodes: list[Node]) -> bool:
    return any(replica_id in n._engine.state.replica_ids() for n in nodes)


def test_pruning_takes_a_config_and_a_config_only() -> None:
    with pytest.raises(TypeError, match="PruningConfig"):
        Node(pruning=120)  # type: ignore[arg-type]
    assert PruningConfig().prune_after == 24 * 3600  # an agent may be offline for hours


def test_a_replaced_replica_is_pruned_everywhere_values_stay_and_it_stays_pruned(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)

    async def main() -> None:
        a = node("a", data_dir=tmp_path)
        await a.start()
        b = node("b", peers=[a.url])
        await b.start()
        c = node("c", peers=[a.url, b.url])
        await c.start()
        a.add_peer(b.url)
        a.add_peer(c.url)
        b.add_peer(c.url)
        nodes = [a, b, c]
        try:
            for n in nodes:
                n.counter("hits").increment(rng.randrange(1, 100))
                n.set("seen").add(f"{n.node_id}-{rng.randrange(1000)}")
            await converge(nodes)
            values = a.value
            old = c._engine.state.replica_id
            port = c.port
            await c.stop()  # no data_dir: it comes back empty, as a new replica
            c = nodes[2] = node("c", port=port, peers=[a.url, b.url])
            await c.start()
            assert c._engine.state.replica_id != old
            await eventually(
                lambda: not held_anywhere(old, nodes) and same_values(nodes),
                "the old replica pruned on every node",
            )
            assert a.value == values, f"seed={seed}: pruning changed a value"
            assert old in a._engine.pruning.pruned
        finally:
            await stop_all(nodes)
        again = Node(data_dir=tmp_path)  # the pruning state was saved: the old id stays out
        try:
            assert old in again._engine.pruning.pruned
            assert old not in again._engine.state.replica_ids()
            assert again.value == values
        finally:
            await again.stop()

    run(main())


def test_tombstones_go_on_every_node_once_stable() -> None:
    async def main() -> None:
        a = node("a")
        await a.start()
        b = node("b", seeds=[a.url])
        await b.start()
        c = node("c", seeds=[a.url])
        await c.start()
        nodes = [a, b, c]
        try:
            kv = a.lwwmap("kv")
            kv["live"] = 0
            kv["gone"] = 1
            del kv["gone"]
            await converge(nodes)

            def entries(n: Node) -> set[object]:
                held = n._engine.state["kv"]
                assert isinstance(held, LWWMap)
                return set(held._entries)

            await eventually(
                lambda: all(entries(n) == {"live"} for n in nodes), "the tombstone gone everywhere"
            )
            assert all(n.value == {"kv": {"live": 0}} for n in nodes)
        finally:
            await stop_all(nodes)

    run(main())


def test_a_pruned_replica_that_returns_starts_anew_and_nothing_of_it_is_merged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        a = node("a")
        await a.start()
        b = node("b", seeds=[a.url])
        await b.start()
        c: Node | None = node("c", seeds=[a.url], data_dir=tmp_path)
        await c.start()
        try:
            for n in (a, b, c):
                n.counter("hits").increment(1)
            await eventually(lambda: all(n.value == {"hits": 3} for n in (a, b, c)), "synced")
            old = c._engine.state.replica_id
            await c.stop()  # a clean stop: it comes back as the same replica
            c = None
            await eventually(
                lambda: not held_anywhere(old, [a, b]), "c's replica pruned once it was removed"
            )
            values = a.value
            assert values == {"hits": 3}, "c's contribution stays, under the pruning owner's"
            c = node("c", seeds=[a.url], data_dir=tmp_path)
            assert c._engine.state.replica_id == old
            c.counter("hits").increment(1000)  # written offline: no peer ever has it
            with caplog.at_level(logging.WARNING, logger="agentsync.node"):
                await c.start()
                await eventually(lambda: c._engine.state.replica_id != old, "a new incarnation")
            warning = [r.getMessage() for r in caplog.records if old in r.getMessage()]
            # Both its writes: the first one reached its peers, but a restarted
            # node has heard no peer's vector yet, so it can only bound the loss.
            assert len(warning) == 1 and "up to 2 of its writes" in warning[0], warning
            await eventually(
                lambda: a.value == b.value == c.value == values, "c resynced from their state"
            )
            assert not held_anywhere(old, [a, b, c])
            new = c._engine.state.replica_id
        finally:
            await stop_all([a, b, c])
        again = Node(data_dir=tmp_path)  # the store was reset: the pruned replica stays gone
        try:
            assert again._engine.state.replica_id == new
            assert again.value == values
        finally:
            await again.stop()

    run(main())


def test_a_failing_prune_step_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        n = node("a")
        calls: list[float] = []

        def failing(now: float, members: object, alive: object) -> bool:
            calls.append(now)
            raise RuntimeError("boom")

        n._engine.prune_departed = failing  # type: ignore[method-assign, assignment]
        with caplog.at_level(logging.ERROR, logger="agentsync.node"):
            await n.start()
            try:
                await eventually(lambda: len(calls) >= 2, "a second step after the failure")
            finally:
                await n.stop()
        assert any("a prune step failed" in r.getMessage() for r in caplog.records)

    run(main())
