"""Access control on real nodes: a read-only observer, a receiver's write ACL, read limits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentsync import Node, ReadOnlyError
from agentsync.sync import SyncMessage
from tests.node.helpers import converge, eventually, run, stop_all

FAST = 0.05


def test_an_observer_pulls_sends_no_deltas_and_refuses_writes() -> None:
    async def main() -> None:
        writer = Node("writer", gossip_interval=FAST)
        await writer.start()
        observer = Node("observer", read_only=True, peers=[writer.url], gossip_interval=FAST)
        await observer.start()
        heard: list[SyncMessage] = []
        engine = writer._engine
        take_request, take_response = engine.on_request, engine.on_response

        def on_request(message: SyncMessage) -> Any:
            heard.append(message)
            return take_request(message)

        def on_response(message: SyncMessage) -> Any:
            heard.append(message)
            return take_response(message)

        engine.on_request, engine.on_response = on_request, on_response  # type: ignore[method-assign]
        writer.add_peer(observer.url)
        try:
            writer.set("tags").add("a")
            writer.counter("hits").increment(2)
            await converge([writer, observer])
            with pytest.raises(ReadOnlyError, match="read-only"):
                observer.counter("hits").increment()
            with pytest.raises(PermissionError):
                observer.set("tags").add("b")
            assert observer.value == writer.value
            await observer.sync_now()  # a request of its own (its rounds may pass the writer over)
            from_observer = [m for m in heard if m.sender == "observer"]
            assert any(m.is_response for m in from_observer)
            assert any(not m.is_response for m in from_observer)
            assert all(not m.deltas and m.piece is None for m in from_observer)
        finally:
            await stop_all([observer, writer])

    run(main())


def test_a_write_acl_drops_forbidden_names_and_lets_allowed_ones_converge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        acl = {"agent": {"write": ["agent-*"]}}
        receiver = Node("receiver", acl=acl, gossip_interval=FAST)
        await receiver.start()
        agent = Node("agent", peers=[receiver.url], gossip_interval=FAST)
        await agent.start()
        try:
            with caplog.at_level(logging.WARNING, logger="agentsync.node"):
                agent.register("config").set("hijacked")
                await eventually(lambda: receiver.metrics.denied > 0, "the delta is dropped")
            agent.set("agent-notes").add("hello")
            receiver.set("agent-notes").add("from the receiver")
            await eventually(
                lambda: (
                    receiver.value.get("agent-notes") == {"hello", "from the receiver"}
                    and agent.value.get("agent-notes") == receiver.value["agent-notes"]
                ),
                "the allowed name converges both ways",
            )
            assert "config" not in receiver.value
            assert "agentsync_sync_denied_total" in receiver.metrics_text()
            [record] = [r for r in caplog.records if "may not write" in r.getMessage()][:1]
            assert "agent" in record.getMessage() and "config" in record.getMessage()
        finally:
            await stop_all([agent, receiver])

    run(main())


@pytest.mark.parametrize(
    ("acl", "error"),
    [
        ({"agent": {"write": "agent-*"}}, TypeError),
        ({"agent": {"delete": ["x"]}}, ValueError),
        ({"agent": {"read": ["agent-*"], "write": ["agent-*"]}}, ValueError),
    ],
)
def test_a_node_refuses_a_malformed_acl(acl: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Node("receiver", acl=acl)


def test_read_only_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="read_only"):
        Node("observer", read_only="yes")  # type: ignore[arg-type]


def test_an_observer_limited_to_some_names_is_sent_only_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two writers; a watcher limited to pub* on both sees exactly those, removals included.

    A node limited the same way that is not an observer is refused with 403
    both ways, and nothing passes between it and the writers.
    """

    async def main() -> None:
        acl = {"watcher": {"read": ["pub*"]}, "intruder": {"read": ["pub*"]}, "*": {"write": ["*"]}}
        caplog.set_level(logging.WARNING, logger="agentsync")
        hub = Node("hub", acl=acl, gossip_interval=FAST)
        await hub.start()
        other = Node("other", acl=acl, peers=[hub.url], gossip_interval=FAST)
        await other.start()
        watcher = Node("watcher", read_only=True, peers=[hub.url, other.url], gossip_interval=FAST)
        intruder = Node("intruder", peers=[hub.url], gossip_interval=FAST)
        await watcher.start()
        await intruder.start()
        try:
            hub.set("pub-notes").add("hello")
            other.counter("pub-hits").increment(3)
            hub.register("secret").set("the plan")
            other.set("secret-list").add("names")
            intruder.set("pub-notes").add("from the intruder")
            readable = {"pub-notes": {"hello"}, "pub-hits": 3}
            await eventually(lambda: watcher.value == readable, "the watcher sees the pub names")
            await converge([hub, other], "the writers converge on every name")
            hub.set("pub-notes").remove("hello")
            other.register("secret").set("another plan")
            readable = {"pub-hits": 3}  # an emptied set is no longer shown
            await eventually(lambda: watcher.value == readable, "a removal reaches the watcher")
            await eventually(lambda: hub.metrics.errors > 0, "the intruder's exchanges are refused")
            assert watcher.value == readable
            assert "from the intruder" not in hub.value.get("pub-notes", ())
            assert "secret" not in intruder.value and "pub-hits" not in intruder.value
            for _ in range(3):
                await intruder.sync_now()
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            told = [line for line in said if "must be a read-only observer" in line]
            assert len(told) == 1, "a refusal is a setting to fix: a warning, once, not a stream"
            assert told[0].startswith(f"{hub.url} refuses this node") and "403" in told[0], told
        finally:
            await stop_all([intruder, watcher, other, hub])

    run(main())


def test_http_reads_show_only_what_any_peer_may_read() -> None:
    """``GET /v1/state`` and ``/v1/status`` name no node: they get the ``"*"`` rule's names."""

    async def main() -> None:
        node = Node("hub", acl={"*": {"read": ["pub*"]}, "admin": {"write": ["*"]}})
        await node.start()
        try:
            node.set("pub-notes").add("hello")
            node.register("secret").set("the plan")
            async with aiohttp.ClientSession() as session:
                async with session.get(node.url + "/v1/state") as response:
                    state = await response.json()
                async with session.get(node.url + "/v1/status") as response:
                    status = await response.json()
            assert set(state["names"]) == {"pub-notes"}
            assert [entry["name"] for entry in status["names"]] == ["pub-notes"]
            assert status["names_total"] == 1
            assert set(node.value) == {"pub-notes", "secret"}, "the local API reads every name"
        finally:
            await node.stop()

    run(main())


def test_a_limited_observers_data_never_becomes_a_writers(tmp_path: Path) -> None:
    """Its state takes the names it was not sent as seen: a writer would pass that on.

    An observer that no peer limits keeps nothing of the kind, and may come
    back as a writer.
    """

    async def main() -> None:
        hub = Node("hub", acl={"watcher": {"read": ["pub*"]}, "*": {"write": ["*"]}})
        await hub.start()
        watcher = Node("watcher", read_only=True, peers=[hub.url], data_dir=str(tmp_path / "w"))
        free = Node("free", read_only=True, peers=[hub.url], data_dir=str(tmp_path / "f"))
        try:
            hub.set("pub-notes").add("hello")
            hub.register("secret").set("the plan")
            await watcher.start()
            await free.start()
            await watcher.sync_now()
            await free.sync_now()
            assert watcher.value == {"pub-notes": {"hello"}}
            assert free.value == hub.value
        finally:
            await stop_all([free, watcher, hub])
        with pytest.raises(ValueError, match="read ACL limited"):
            Node("watcher", data_dir=str(tmp_path / "w"))
        again = Node("watcher", read_only=True, data_dir=str(tmp_path / "w"))
        assert again.value == {"pub-notes": {"hello"}} and again._engine.limited
        writer = Node("free", data_dir=str(tmp_path / "f"))
        assert writer.value == hub.value
        await stop_all([again, writer])

    run(main())
