"""Access control on real nodes: a read-only observer, and a receiver's write ACL."""

from __future__ import annotations

import logging
from typing import Any

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
        ({"agent": {"read": ["agent-*"]}}, ValueError),
    ],
)
def test_a_node_refuses_a_malformed_acl(acl: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Node("receiver", acl=acl)


def test_read_only_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="read_only"):
        Node("observer", read_only="yes")  # type: ignore[arg-type]
