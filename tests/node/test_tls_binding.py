"""Node ids bound to TLS certificates (``TLSConfig(bind_node_ids=True)``), on loopback.

An honest cluster converges; a member holding a valid certificate for "b"
that says it is another node is refused as a client (403, nothing merged)
and as a server (the exchange fails, nothing merged); and binding makes a
write ACL hold against it where the ACL alone does not. One throwaway CA
per module (``tests.tlscerts``); every wait polls with a deadline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agentsync import Node
from agentsync.errors import PeerUnavailableError
from agentsync.security import Channel, Keyring
from agentsync.sync import SyncEngine, encode_message
from agentsync.transport import SyncClient
from agentsync.transport.tls import TLSConfig, node_uri
from tests.node.helpers import converge, eventually, run, stop_all
from tests.tlscerts import Pki

FAST = 0.05
SECRET = b"s" * 32
UNREACHABLE = "https://127.0.0.1:9"
"""A peer no node answers at: a node given only it never learns another peer."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki: Pki) -> dict[str, tuple[str, str]]:
    """A certificate per node id, each naming its id (``agentsync:node/<id>``)."""
    return {name: pki.issue(name, uris=(node_uri(name),)) for name in ("a", "b", "c", "v")}


def tls(pki: Pki, files: tuple[str, str], *, bind: bool = True) -> TLSConfig:
    cert, key = files
    return TLSConfig(cert=cert, key=key, ca=(pki.ca,), require_client_cert=True, bind_node_ids=bind)


def impostor(pki: Pki, certs: dict[str, tuple[str, str]], claims: str, **options: Any) -> Node:
    """A node holding b's valid certificate that says it is ``claims``; it binds nothing
    itself (a node whose own certificate names another id refuses to be made)."""
    return Node(claims, gossip_interval=FAST, tls=tls(pki, certs["b"], bind=False), **options)


@pytest.mark.parametrize("secret", [None, SECRET], ids=["tls", "tls+secret"])
def test_an_honest_cluster_converges_with_node_ids_bound(
    pki: Pki, certs: dict[str, tuple[str, str]], secret: bytes | None,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="agentsync")

    async def main() -> None:
        a = Node("a", gossip_interval=FAST, secret=secret, tls=tls(pki, certs["a"]))
        await a.start()
        b = Node("b", gossip_interval=FAST, secret=secret, seeds=[a.url], tls=tls(pki, certs["b"]))
        c = Node("c", gossip_interval=FAST, secret=secret, seeds=[a.url], tls=tls(pki, certs["c"]))
        nodes = [a, b, c]
        try:
            await b.start()
            await c.start()
            a.counter("hits").increment(2)
            b.set("seen").add("b")
            c.counter("hits").increment()
            await converge(nodes)
            assert a.value == {"hits": 3, "seen": frozenset({"b"})}
            await eventually(lambda: len(c.peers) == 2, "c to learn b from a")
        finally:
            await stop_all(nodes)

    run(main())
    # Not metrics.errors == 0: on a loaded machine a handshake may outlast the
    # client's connect timeout, and the server counts it. A refused sender or
    # a refused reply is logged as a warning.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("secret", [None, SECRET], ids=["tls", "tls+secret"])
def test_an_impostor_client_is_refused_with_403_and_changes_nothing(
    pki: Pki, certs: dict[str, tuple[str, str]], caplog: pytest.LogCaptureFixture,
    secret: bytes | None,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="agentsync")

    async def main() -> None:
        v = Node("v", gossip_interval=FAST, secret=secret, tls=tls(pki, certs["v"]))
        await v.start()
        v.counter("hits").increment()
        x = impostor(pki, certs, "a", peers=[v.url], secret=secret)
        channel = Channel(Keyring(secret, cluster="default"), "a") if secret is not None else None
        ssl = tls(pki, certs["b"], bind=False).client_context()
        client = SyncClient(timeout=2.0, ssl=ssl, channel=channel)
        await client.start()
        try:
            x.counter("hits").increment(100)
            await x.start()
            await eventually(lambda: v.metrics.errors >= 3, "v to refuse x three times")
            assert v.value == {"hits": 1}, "nothing of the impostor's was merged"
            assert x.value == {"hits": 100}, "nor did it get anything back"
            assert v.peers == [], "the impostor was never learned"
            message = SyncEngine("a").request(None)  # one request by hand, to see the answer
            with pytest.raises(PeerUnavailableError) as refused:
                await client.exchange(v.url, encode_message(message))
            assert "HTTP 403: the message names sender 'a', its certificate 'b'" in str(refused)
        finally:
            await client.close()
            await stop_all([v, x])

    run(main())
    logged = [r.getMessage() for r in caplog.records if "certificate names" in r.getMessage()]
    assert logged, "the refusal is logged"
    assert all("'a'" in line and "'b'" in line for line in logged), logged


@pytest.mark.parametrize("secret", [None, SECRET], ids=["tls", "tls+secret"])
def test_an_impostor_server_fails_the_exchange_and_nothing_is_merged(
    pki: Pki, certs: dict[str, tuple[str, str]], secret: bytes | None
) -> None:
    async def main() -> None:
        x = impostor(pki, certs, "a", peers=[UNREACHABLE], secret=secret)  # never dials v
        x.counter("hits").increment(100)
        await x.start()
        config = tls(pki, certs["v"])
        v = Node("v", gossip_interval=FAST, peers=[x.url], secret=secret, tls=config)
        v.counter("hits").increment()
        await v.start()
        try:
            if secret is None:  # the reply names 'a', the certificate 'b': a bad reply
                await eventually(lambda: v.metrics.errors >= 3, "v to refuse x's replies 3 times")
            else:  # sealed by 'a' too: refused with the envelope, like a forged one (backoff)
                await eventually(lambda: failures(v) >= 3, "v to refuse x's replies 3 times")
            assert v.value == {"hits": 1}, "nothing of the replies was merged"
            assert v.metrics.rounds == 0, "no exchange completed"
        finally:
            await stop_all([v, x])

    run(main())


def failures(node: Node) -> int:
    """The failed exchanges in a row with the node's one peer."""
    [peer] = node.health()["peers"]
    return int(peer["failures"])


@pytest.mark.parametrize("bind", [False, True], ids=["acl-alone", "acl-and-binding"])
def test_binding_makes_a_write_acl_hold_against_an_impostor(
    pki: Pki, certs: dict[str, tuple[str, str]], bind: bool
) -> None:
    """v lets c write "config" and b only "b-*": b's holder claims to be c."""
    acl = {"c": {"write": ["config"]}, "b": {"write": ["b-*"]}}

    async def main() -> None:
        v = Node("v", gossip_interval=FAST, acl=acl, tls=tls(pki, certs["v"], bind=bind))
        await v.start()
        x = impostor(pki, certs, "c", peers=[v.url])
        b = Node("b", gossip_interval=FAST, peers=[v.url], tls=tls(pki, certs["b"]))
        try:
            x.counter("config").increment(100)  # c's name, written by b's holder
            await x.start()
            if not bind:
                await eventually(lambda: "config" in v.value, "the ACL to take x as c")
                assert v.value["config"] == 100, "the ACL alone is fooled"
                return
            await eventually(lambda: v.metrics.errors >= 3, "v to refuse x three times")
            await b.start()  # b itself, under its own id, writes its own name
            b.counter("b-notes").increment()
            await eventually(lambda: v.value.get("b-notes") == 1, "b's own write to arrive")
            assert "config" not in v.value
            assert v.metrics.denied == 0, "x was refused whole, before the ACL was asked"
        finally:
            await stop_all([v, b, x])

    run(main())


def test_a_nodes_own_certificate_must_name_its_id(
    tmp_path: Path, pki: Pki, certs: dict[str, tuple[str, str]]
) -> None:
    config = tls(pki, certs["b"])
    with pytest.raises(ValueError, match=r"names node id 'b', not 'a'"):
        Node("a", tls=config)
    assert Node(tls=config).node_id == "b", "without an id, the node takes its certificate's"
    assert Node("b", tls=config).node_id == "b"
    assert Node("a", tls=tls(pki, certs["b"], bind=False)).node_id == "a", "binding is opt-in"
    data = tmp_path / "a"
    run(Node("a", data_dir=data).stop())
    with pytest.raises(ValueError, match=r"holds node 'a', not 'b'"):
        Node(data_dir=data, tls=config)
