"""Two real SyncEngines converging over real HTTP: the transport and the sync layer fit.

The handler here is the least a Node must do: decode the request, let the
engine answer it, encode the reply.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from agentsync.crdt import GSet, LWWRegister
from agentsync.errors import PeerUnavailableError
from agentsync.sync import SyncEngine, decode_message, encode_message
from agentsync.transport import SyncClient, SyncServer
from tests.transport.helpers import run, serving, started

MAX_ROUNDS = 10


class EngineHandler:
    """A SyncHandler backed by one engine."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.errors = 0

    def handle_sync(
        self,
        body: bytes,
        remote: str | None = None,
        sender: str | None = None,
        certified: str | None = None,
    ) -> bytes:
        reply, _ = self.engine.on_request(decode_message(body))
        return encode_message(reply)

    def health(self) -> dict[str, Any]:
        return {"node": self.engine.node_id}

    def state_json(self) -> dict[str, Any]:
        return {"head": self.engine.head}

    def metrics_text(self) -> str:
        return f"agentsync_rounds_total {self.engine.metrics.rounds}\n"

    def count_error(self) -> None:
        self.errors += 1


async def _pull(client: SyncClient, engine: SyncEngine, peer: SyncServer, peer_id: str) -> int:
    """One exchange started by ``engine`` with the node behind ``peer``; the reply's size."""
    reply = await client.exchange(peer.url, encode_message(engine.request(peer_id)))
    engine.on_response(decode_message(reply))
    return len(reply)


def _adding(text: str) -> Callable[[GSet], GSet]:
    return lambda notes: notes.add(text)


def test_two_engines_converge_over_http() -> None:
    a, b = SyncEngine("node-a"), SyncEngine("node-b")
    a.record_local(a.state.update("goal", LWWRegister, lambda r: r.set("summarise")))
    b.record_local(b.state.update("seen", GSet, lambda s: s.add("paper-1")))
    b.record_local(b.state.update("seen", GSet, lambda s: s.add("paper-2")))

    async def main() -> int:
        async with (
            serving(EngineHandler(a)) as server_a,
            serving(EngineHandler(b)) as server_b,
            started(SyncClient()) as client_a,
            started(SyncClient()) as client_b,
        ):
            for rounds in range(1, MAX_ROUNDS + 1):
                await _pull(client_a, a, server_b, "node-b")
                await _pull(client_b, b, server_a, "node-a")
                if a.state == b.state:
                    assert await client_a.get_json(server_b.url, "/v1/health") == {"node": "node-b"}
                    return rounds
        raise AssertionError(f"no convergence in {MAX_ROUNDS} rounds")

    assert run(main()) <= 2
    assert a.state.value["seen"] == b.state.value["seen"] == frozenset({"paper-1", "paper-2"})
    assert a.state.value["goal"] == "summarise"


def test_a_snapshot_in_near_limit_pieces_crosses_the_default_limits() -> None:
    rng = random.Random(5)
    a, b = SyncEngine("node-a"), SyncEngine("node-b")
    for _ in range(600):  # about 2.4 MB of incompressible text: several 1 MiB pieces
        b.record_local(b.state.update("notes", GSet, _adding(rng.randbytes(2000).hex())))

    async def main() -> list[int]:
        async with serving(EngineHandler(b)) as server_b, started(SyncClient()) as client:
            sizes = []
            for _ in range(MAX_ROUNDS):
                sizes.append(await _pull(client, a, server_b, "node-b"))
                if a.state == b.state:
                    return sizes
        raise AssertionError(f"no convergence in {MAX_ROUNDS} rounds")

    sizes = run(main())
    assert max(sizes) > 1_000_000, "a piece close to the engine's bound went through"
    assert len(a.state.value["notes"]) == 600


def test_a_node_of_another_cluster_is_refused_and_changes_nothing() -> None:
    b = SyncEngine("node-b", cluster="green")
    b.record_local(b.state.update("goal", LWWRegister, lambda r: r.set("stay")))
    before = b.state.copy()
    stranger = SyncEngine("node-x", cluster="blue")
    stranger.record_local(stranger.state.update("goal", LWWRegister, lambda r: r.set("take over")))
    handler = EngineHandler(b)

    async def main() -> tuple[str, str]:
        async with serving(handler) as server, started(SyncClient()) as client:
            with pytest.raises(PeerUnavailableError) as mismatch:
                await client.exchange(server.url, encode_message(stranger.request("node-b")))
            with pytest.raises(PeerUnavailableError) as garbage:
                await client.exchange(server.url, b"\x92\x01\x02")
            return str(mismatch.value), str(garbage.value)

    mismatch, garbage = run(main())
    assert "HTTP 409: message from cluster 'blue'" in mismatch
    assert "HTTP 400: expected an array of 13 to 64 items" in garbage
    assert b.state == before
    assert handler.errors == 0
