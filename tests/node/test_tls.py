"""Nodes with TLS on loopback: mutual TLS, pins, a secret on top, and what is refused.

One throwaway CA per module (``tests.tlscerts``); waits poll with a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentsync import Node
from agentsync.discovery.mdns import Discovered
from agentsync.sync import PROTOCOL_VERSION
from agentsync.transport import SyncClient
from agentsync.transport.tls import TLSConfig, fingerprint
from tests.node.helpers import converge, eventually, run, stop_all
from tests.tlscerts import Pki

FAST = 0.05
SECRET = b"s" * 32


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki: Pki) -> dict[str, tuple[str, str]]:
    return {name: pki.issue(name) for name in ("a", "b")}


def tls(pki: Pki, files: tuple[str, str], **options: Any) -> TLSConfig:
    cert, key = files
    return TLSConfig(cert=cert, key=key, ca=(pki.ca,), require_client_cert=True, **options)


def test_a_mutual_tls_cluster_with_pins_converges_over_https(
    pki: Pki, certs: dict[str, tuple[str, str]]
) -> None:
    pins = frozenset(fingerprint(cert) for cert, _ in certs.values())

    async def main() -> None:
        a = Node("a", gossip_interval=FAST, tls=tls(pki, certs["a"], pins=pins))
        await a.start()
        b = Node("b", gossip_interval=FAST, seeds=[a.url], tls=tls(pki, certs["b"], pins=pins))
        await b.start()
        try:
            assert a.url.startswith("https://127.0.0.1:")
            a.counter("hits").increment(2)
            b.set("seen").add("b")
            await converge([a, b])
            assert a.value == {"hits": 2, "seen": frozenset({"b"})}
            await eventually(lambda: b.url in a.peers, "a to learn b's https URL from b")
            assert a.metrics.errors == b.metrics.errors == 0
        finally:
            await stop_all([a, b])

    run(main())


def test_tls_and_a_secret_together(pki: Pki, certs: dict[str, tuple[str, str]]) -> None:
    async def main() -> None:
        a = Node("a", gossip_interval=FAST, secret=SECRET, tls=tls(pki, certs["a"]))
        await a.start()
        b = Node("b", gossip_interval=FAST, secret=SECRET, peers=[a.url], tls=tls(pki, certs["b"]))
        await b.start()
        reader = SyncClient(ssl=tls(pki, certs["b"]).client_context())
        await reader.start()
        try:
            b.counter("hits").increment(5)
            await converge([a, b])
            assert a.value == {"hits": 5}
            assert a.auth_failures == b.auth_failures == 0
            assert a.keyring is not None
            state = await reader.get_json(a.url, "/v1/state", token=a.keyring.primary.token)
            assert "hits" in state["names"]
        finally:
            await reader.close()
            await stop_all([a, b])

    run(main())


@pytest.mark.parametrize("intruder", ["another CA", "plain http"])
def test_an_intruder_is_refused_counted_and_changes_nothing(
    tmp_path: Path, pki: Pki, certs: dict[str, tuple[str, str]], intruder: str
) -> None:
    async def main() -> None:
        a = Node("a", gossip_interval=FAST, tls=tls(pki, certs["a"]))
        await a.start()
        a.counter("hits").increment()
        if intruder == "another CA":
            rogue = Pki(tmp_path, "rogue CA")
            options: dict[str, Any] = {"peers": [a.url], "tls": tls(rogue, rogue.issue("x"))}
        else:
            options = {"peers": [a.url.replace("https://", "http://")]}
        x = Node("x", gossip_interval=FAST, **options)
        await x.start()
        try:
            x.counter("hits").increment(100)
            await eventually(lambda: a.metrics.errors >= 3, "a to refuse x three times")
            assert a.value == {"hits": 1}
            assert x.value == {"hits": 100}
            assert a.peers == [], "x was never learned"
        finally:
            await stop_all([a, x])

    run(main())


def test_a_tls_node_takes_https_urls_only(pki: Pki, certs: dict[str, tuple[str, str]]) -> None:
    config = tls(pki, certs["a"])
    for where in ("peers", "seeds"):
        with pytest.raises(ValueError, match="plain http"):
            Node("a", tls=config, **{where: ["http://127.0.0.1:9"]})
    node = Node("a", tls=config)
    with pytest.raises(ValueError, match="plain http"):
        node.add_peer("http://127.0.0.1:9")
    node._learn((("b", "http://127.0.0.1:9"),), sender="b", peer_url="https://127.0.0.1:8")
    assert node.peers == [], "an http URL a peer names is skipped"
    node._found(Discovered("c", "default", PROTOCOL_VERSION, ("http://10.0.0.5:7000",)))
    assert node.peers == [], "a plain node found over mDNS is skipped"
    node._found(Discovered("d", "default", PROTOCOL_VERSION, ("https://10.0.0.6:7000",)))
    assert node.peers == ["https://10.0.0.6:7000"], "one announcing tls=1 is reached at https"
    with pytest.raises(TypeError, match="TLSConfig"):
        Node("a", tls={"cert": "x"})  # type: ignore[arg-type]
