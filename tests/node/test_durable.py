"""A Node with a ``data_dir``: it resumes where it stopped, and logs what it must.

Crashes (SIGKILL of a real process) are in ``tests/store/test_crash.py``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync import Node
from agentsync import node as node_module
from agentsync.crdt import codec, decode
from agentsync.store import StoreError, StoreLockedError
from agentsync.store.sqlite import DB_FILE
from agentsync.sync.buffer import MAX_LISTED_DOTS, SEAL_EVERY
from tests.crdt.strategies import examples
from tests.node.helpers import converge, eventually, run, stop_all

FAST = 0.05


def logged(node: Node, query: str = "SELECT count(*) FROM log") -> Any:
    """The first value of ``query`` on the node's open store (its connection holds the file)."""
    store = node._store
    assert store is not None
    with store._lock:
        return store._db.execute(query).fetchone()[0]


def test_a_restarted_node_resumes_its_id_state_replica_and_members(tmp_path: Path) -> None:
    async def main() -> None:
        peer = Node("peer", gossip_interval=FAST)
        await peer.start()
        a = Node(data_dir=tmp_path, seeds=[peer.url], gossip_interval=FAST)
        await a.start()
        try:
            a.set("tasks").add("write")
            a.counter("done").increment(3)
            peer.register("who").set("peer")
            await converge([a, peer])
            node_id, replica = a.node_id, a._engine.state.replica_id
            value = a.value
        finally:
            await a.stop()
        again = Node(data_dir=tmp_path, gossip_interval=FAST)  # no id, no seeds given
        try:
            assert again.node_id == node_id
            assert again.value == value  # the peer's write too
            assert again._engine.state.replica_id == replica  # a clean stop: the same replica
            assert again.peers == [peer.url]  # the members it knew, tried first
            await again.start()
            again.set("tasks").add("review")
            await eventually(lambda: "review" in (peer.set("tasks").value or set()), "it gossips")
        finally:
            await stop_all([again, peer])

    run(main())


def test_each_write_is_logged_before_it_returns_and_a_batch_once(tmp_path: Path) -> None:
    node = Node("n", data_dir=tmp_path)
    node.counter("c").increment()
    node.counter("c").increment()
    assert logged(node) == 2
    with node.batch():
        for i in range(50):
            node.set("s").add(i)
        assert logged(node) == 2  # not yet: the batch commits when it ends
    assert logged(node) == 3  # the batch's 50 writes as one joined delta
    run(node.stop())  # closes the store of a node never started
    assert Node(data_dir=tmp_path).value == {"c": 2, "s": frozenset(range(50))}


def test_a_long_batch_is_logged_in_parts_sealed_as_the_sync_buffer_seals(tmp_path: Path) -> None:
    assert (SEAL_EVERY, MAX_LISTED_DOTS) == (4096, 8192)  # as the counts below assume
    node = Node("n", data_dir=tmp_path, durability="normal")
    elements = range(5000)
    with node.batch():
        for i in elements:
            node.set("s").add(i)
    assert logged(node) == 2  # SEAL_EVERY writes, then the rest
    with node.batch():
        node.set("s").clear()  # lists the 5,000 elements' dots and one of its own
        for i in elements:  # a dot more each: MAX_LISTED_DOTS after 3,191, SEAL_EVERY never
            node.set("s").add(i)
    assert logged(node) == 4
    run(node.stop())
    assert Node(data_dir=tmp_path).value == {"s": frozenset(elements)}


def test_a_batch_too_large_to_decode_is_logged_as_the_whole_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node("n", data_dir=tmp_path)
    node.counter("c").increment()
    with monkeypatch.context() as patch:
        patch.setattr(codec, "MAX_ENCODED_BYTES", 500)
        with node.batch():
            for i in range(50):
                node.set("s").add(f"element {i:04}")
    assert not decode(logged(node, "SELECT delta FROM log ORDER BY seq DESC")).is_delta
    run(node.stop())
    assert Node(data_dir=tmp_path).value == {"c": 1, "s": {f"element {i:04}" for i in range(50)}}


def test_a_peers_writes_are_logged_as_they_merge(tmp_path: Path) -> None:
    async def main() -> None:
        writer = Node("writer", gossip_interval=FAST)
        await writer.start()
        reader = Node("reader", data_dir=tmp_path, peers=[writer.url], gossip_interval=FAST)
        await reader.start()
        try:
            for i in range(20):
                writer.set("seen").add(i)
            await converge([writer, reader])
        finally:
            await stop_all([reader, writer])
        assert Node(data_dir=tmp_path).value == {"seen": frozenset(range(20))}

    run(main())


def test_a_clean_restart_resumes_its_sync_session_with_no_snapshot(tmp_path: Path) -> None:
    """The epoch, delta buffer and acks are kept: each side sends only what the other lacks."""

    async def main() -> None:
        peer = Node("peer", gossip_interval=FAST)
        await peer.start()
        a = Node("a", data_dir=tmp_path, seeds=[peer.url], gossip_interval=FAST)
        again: Node | None = None
        try:
            await a.start()
            for i in range(300):
                a.set("s").add(f"a{i}")
                peer.set("s").add(f"p{i}")
            await converge([a, peer])
            await eventually(lambda: not peer._engine.wants_more("a"), "no snapshot under way")
            # Once the peer has reached a itself, it knows which node answers there.
            await eventually(lambda: peer._membership.peer_id(a.url) == "a", "the peer reached a")
            port, epoch = int(a.url.rsplit(":", 1)[1]), a._engine.epoch
            snapshots = peer.metrics.full_state_fallbacks
            a.set("s").add("written as it stops")
            await a.stop()
            peer.set("s").add("written while it was down")
            again = Node(data_dir=tmp_path, port=port, gossip_interval=FAST)
            assert again._engine.epoch == epoch, "a clean stop: the same epoch"
            await again.start()
            await converge([again, peer])
            assert len(peer.set("s").value or ()) == 602
            assert peer.metrics.full_state_fallbacks == snapshots
            assert again.metrics.full_state_fallbacks == 0
        finally:
            await stop_all([again, a, peer])

    run(main())


def test_the_log_is_compacted_in_the_background_but_never_inside_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot taken mid-batch would hold writes not logged yet: half a batch durable."""
    monkeypatch.setattr(node_module, "COMPACT_MIN_BYTES", 2000)

    async def main() -> None:
        node = Node("n", data_dir=tmp_path, gossip_interval=FAST)
        await node.start()
        ticks = 0
        tick = node._membership.tick

        def counted(now: float) -> Any:
            nonlocal ticks
            ticks += 1
            return tick(now)

        monkeypatch.setattr(node._membership, "tick", counted)
        try:
            for i in range(500):
                node.set("s").add(i)  # logged one by one: the log wants compacting
            with node.batch():
                node.set("s").add("in the batch")
                snapshot = ticks
                await eventually(lambda: ticks >= snapshot + 3, "three watch ticks in the batch")
                assert logged(node) >= 500, "a compaction started inside the batch"
            await eventually(lambda: logged(node) < 100, "the log folded once the batch ended")
            node.set("s").add("after")  # logged after the snapshot
        finally:
            await node.stop()
        expected = frozenset([*range(500), "in the batch", "after"])
        assert Node(data_dir=tmp_path).value == {"s": expected}

    run(main())


def test_a_data_dir_holds_one_node_of_one_cluster(tmp_path: Path) -> None:
    run(Node("a", data_dir=tmp_path, cluster="blue").stop())
    with pytest.raises(ValueError, match="holds node 'a', not 'b'"):
        Node("b", data_dir=tmp_path, cluster="blue")
    with pytest.raises(ValueError, match="cluster 'blue', not 'red'"):
        Node("a", data_dir=tmp_path, cluster="red")
    node = Node("a", data_dir=tmp_path, cluster="blue")  # the refusals left it free
    with pytest.raises(StoreLockedError):
        Node("a", data_dir=tmp_path, cluster="blue")
    run(node.stop())


def test_bad_durability_and_bad_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        Node("a", durability="eventually")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot use"):
        Node("a", data_dir=tmp_path / "file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / DB_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        Node("a", data_dir=tmp_path / "d")


_BATCH_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["add"] * 3 + ["update", "discard", "clear", "up", "down", "put", "on", "off", "drop"]
        ),
        st.sampled_from(["s", "m"]),
        st.integers(0, 5),
    ),
    max_size=40,
)


@settings(max_examples=examples(25), deadline=None)
@given(batches=st.lists(st.tuples(_BATCH_OPS, st.booleans()), min_size=1, max_size=4))
def test_batches_of_writes_applied_in_place_reload_as_written(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[list[Any], bool]]
) -> None:
    """A batch's later writes to a replica skip their delta (``LocalGroup.step``): what it
    logs still reloads to what a node writing each delta on its own holds."""
    data_dir = tmp_path_factory.mktemp("batches")
    node, twin = Node("n", data_dir=data_dir, durability="normal"), Node("t")

    def write(on: Node, op: str, where: str, i: int) -> None:
        container: Any = on if where == "s" else on.map("m").map(i % 2)
        if op in ("add", "discard", "clear"):
            target = container.set("tasks")
            target.add(i) if op == "add" else target.clear() if op == "clear" else target.discard(i)
        elif op == "update":
            container.set("tasks").update(range(i, 2 * i))
            container.lwwmap("config").update({i: "v", "last": i}, by=i)
        elif op in ("up", "down"):
            counter = container.counter("done")
            counter.increment(i) if op == "up" else counter.decrement(i)
        elif op == "put":
            container.register("status").set(i)
            container.mvregister("plan").set(i)
        elif op in ("on", "off"):
            flag = container.flag("ready")
            flag.enable() if op == "on" else flag.disable()
        elif where == "m" and i % 2 in on.map("m"):
            on.map("m").remove(i % 2)

    for ops, batched in batches:
        with node.batch() if batched else contextlib.nullcontext():
            for op in ops:
                write(node, *op)
                write(twin, *op)
                assert node.value == twin.value
    expected = node.value
    assert expected == twin.value
    run(node.stop())
    again = Node(data_dir=data_dir)
    try:
        assert again.value == expected
    finally:
        run(again.stop())
