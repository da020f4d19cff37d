"""Forgery against real nodes over HTTP: refused with a 4xx, logged with the sender, counted.

The engine's side of each check is in ``tests/sync/test_forgery.py``; here
the whole path: the request over loopback, the answer, the log, the metric,
and a durable node restored from an old backup, which the same check finds.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import aiohttp
import msgpack
import pytest

from agentsync import Node
from agentsync.crdt import LWWRegister, ORMap, ORSet
from agentsync.sync import SyncMessage, encode_message
from agentsync.transport.wire import MSGPACK
from tests.node.helpers import converge, eventually, run, stop_all

FAST = 0.05


async def post(node: Node, body: bytes) -> int:
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": MSGPACK}
        async with session.post(f"{node.url}/v1/sync", data=body, headers=headers) as response:
            await response.read()
            return response.status


def from_evil(node: Node, delta: ORMap) -> bytes:
    """A request of a peer named ``evil`` carrying ``delta``."""
    return encode_message(SyncMessage("evil", node.cluster, 1, 1, deltas=(delta,), base=0))


def test_forged_skewed_and_oversized_claims_get_400_and_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        node = Node("victim", gossip_interval=FAST)
        await node.start()
        try:
            node.set("tags").add("mine")
            value, replica = node.value, node._engine.state.replica_id
            twin = node._engine.state.copy()  # writes on under the victim's own replica id
            forged = twin.update("tags", ORSet, lambda s: s.add("forged"))
            future = ORMap("evil.0", clock=lambda: time.time_ns() + 3600 * 10**9)
            skewed = future.update("title", LWWRegister, lambda r: r.set("an hour ahead"))
            raw = msgpack.unpackb(from_evil(node, forged), raw=False)
            huge = msgpack.packb([*raw, None, msgpack.packb([["x"], [2**63]])])
            with caplog.at_level(logging.ERROR, logger="agentsync.node"):
                assert await post(node, from_evil(node, forged)) == 400
            assert await post(node, from_evil(node, skewed)) == 400
            assert await post(node, huge) == 400
            assert node.value == value
            assert node.metrics.forged == 1 and node.metrics.errors == 3
            assert "agentsync_sync_forged_total 1" in node.metrics_text()
            [record] = [r for r in caplog.records if "claims dot" in r.getMessage()]
            assert "evil" in record.getMessage() and replica in record.getMessage()
            assert "restored from a backup" in record.getMessage()
        finally:
            await node.stop()

    run(main())


def test_a_node_restored_from_an_old_backup_refuses_its_peers_later_dots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean stop keeps the replica id, so a backup of it reuses the id: detected, logged.

    The restored node's context stops short of the dots its peers saw from
    the same replica id after the backup; it refuses every message that
    claims them, rather than merging a context that would make its next
    writes look seen already.
    """
    data, backup = tmp_path / "a", tmp_path / "backup"

    async def main() -> None:
        peer = Node("peer", gossip_interval=FAST)
        await peer.start()
        a: Node | None = None
        try:
            a = Node("a", data_dir=data, peers=[peer.url], gossip_interval=FAST)
            await a.start()
            a.set("tags").add("before the backup")
            await converge([a, peer])
            await a.stop()
            shutil.copytree(data, backup)
            a = Node("a", data_dir=data, peers=[peer.url], gossip_interval=FAST)
            await a.start()
            a.set("tags").add("after the backup")
            await converge([a, peer])
            await a.stop()
            shutil.rmtree(data)
            shutil.copytree(backup, data)  # the operator restores the old backup
            a = Node("a", data_dir=data, peers=[peer.url], gossip_interval=FAST)
            with caplog.at_level(logging.ERROR, logger="agentsync.node"):
                await a.start()
                restored = a
                await eventually(lambda: restored.metrics.forged > 0, "the reuse is found")
            assert "after the backup" not in (a.set("tags").value or set())
            assert any("restored from a backup" in r.getMessage() for r in caplog.records)
        finally:
            await stop_all([a, peer])

    run(main())
