"""Node ids bound to TLS certificates on the transport: TLSConfig's checks, and the
node id a client and a server read from the other's certificate.

One throwaway CA per module (``tests.tlscerts``); servers run on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentsync.errors import PeerUnavailableError
from agentsync.transport import SyncClient, SyncServer
from agentsync.transport.tls import TLSConfig, certified_node_id, node_uri
from tests.tlscerts import Pki
from tests.transport.helpers import FakeHandler, run, serving, started

BODY = b"\x91\x01"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def bound(pki: Pki, files: tuple[str, str], **options: object) -> TLSConfig:
    cert, key = files
    return TLSConfig(cert=cert, key=key, ca=(pki.ca,), require_client_cert=True,
                     bind_node_ids=True, **options)  # type: ignore[arg-type]  # fmt: skip


def test_node_uri_percent_encodes_and_certified_node_id_reads_it_back() -> None:
    assert node_uri("b") == "agentsync:node/b"
    assert node_uri("a b/ü") == "agentsync:node/a%20b%2F%C3%BC"
    for node_id in ("b", "a b/ü", "node-7.lab", "%41"):
        cert = {"subjectAltName": (("DNS", "localhost"), ("URI", node_uri(node_id)))}
        assert certified_node_id(cert) == node_id
    assert certified_node_id({"subject": ((("commonName", "b"),),)}) is None, "CN never counts"
    assert certified_node_id({"subjectAltName": (("URI", "agentsync:node/"),)}) is None
    assert certified_node_id({"subjectAltName": (("URI", "agentsync:node/%ff"),)}) is None
    two = {"subjectAltName": (("URI", node_uri("a")), ("URI", node_uri("b")))}
    assert certified_node_id(two) is None, "a certificate naming two ids names none"
    same = {"subjectAltName": (("URI", node_uri("a")), ("URI", "agentsync:node/%61"))}
    assert certified_node_id(same) == "a"
    assert certified_node_id({}) is None and certified_node_id(None) is None
    with pytest.raises(ValueError, match="non-empty"):
        node_uri("")


def test_binding_is_checked_when_the_config_is_made(tmp_path: Path, pki: Pki) -> None:
    named = pki.issue("bind-b", uris=(node_uri("b"),))
    assert bound(pki, named).certified_id() == "b"
    assert TLSConfig(cert=named[0], key=named[1], ca=(pki.ca,)).certified_id() is None
    cert, key = named
    with pytest.raises(ValueError, match="bind_node_ids needs require_client_cert"):
        TLSConfig(cert=cert, key=key, ca=(pki.ca,), bind_node_ids=True)
    with pytest.raises(ValueError, match="bind_node_ids needs cert"):
        TLSConfig(ca=(pki.ca,), require_client_cert=True, bind_node_ids=True)
    with pytest.raises(TypeError, match="bind_node_ids must be a bool"):
        TLSConfig(bind_node_ids=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"exactly one node id .* it names none"):
        bound(pki, pki.issue("bind-none"))
    with pytest.raises(ValueError, match=r"it names 'a', 'b'"):
        bound(pki, pki.issue("bind-two", uris=(node_uri("a"), node_uri("b"))))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"junk\.pem"):
        TLSConfig(cert=str(junk), ca=(pki.ca,), require_client_cert=True, bind_node_ids=True)
    with pytest.raises(ValueError, match="bind_node_ids needs ssl"):
        SyncClient(bind_node_ids=True)


def test_the_client_reads_the_node_id_the_servers_certificate_names(pki: Pki) -> None:
    client_tls = bound(pki, pki.issue("bind-client", uris=(node_uri("c"),)))

    async def exchange(
        server_files: tuple[str, str], handler: FakeHandler
    ) -> tuple[bytes, str | None]:
        server_tls = TLSConfig(
            cert=server_files[0], key=server_files[1], ca=(pki.ca,), require_client_cert=True
        )
        client = SyncClient(timeout=2.0, ssl=client_tls.client_context(), bind_node_ids=True)
        async with serving(handler, ssl=server_tls.server_context()) as server, started(client):
            return await client.exchange_from(server.url, BODY)

    handler = FakeHandler()
    named = pki.issue("bind-server", uris=(node_uri("server-1"),))
    assert run(exchange(named, handler)) == (b"echo:" + BODY, "server-1")
    with pytest.raises(PeerUnavailableError, match="certificate names no node id"):
        run(exchange(pki.issue("bind-server-anonymous"), handler))
    assert len(handler.bodies) == 2, "the request went out; its reply is what is refused"
    assert handler.certified == [None, None], "a server that binds nothing passes None"


def test_the_server_hands_on_the_node_id_the_clients_certificate_names(pki: Pki) -> None:
    server_tls = bound(pki, pki.issue("bind-v", uris=(node_uri("v"),)))

    async def exchange(client_files: tuple[str, str], handler: FakeHandler) -> bytes:
        cert, key = client_files
        client_tls = TLSConfig(cert=cert, key=key, ca=(pki.ca,))
        context = server_tls.server_context()
        async with (
            serving(handler, ssl=context, bind_node_ids=True) as server,
            started(SyncClient(timeout=2.0, ssl=client_tls.client_context())) as client,
        ):
            return await client.exchange(server.url, BODY)

    handler = FakeHandler()
    assert run(exchange(pki.issue("bind-c", uris=(node_uri("c"),)), handler)) == b"echo:" + BODY
    assert handler.certified == ["c"]
    with pytest.raises(PeerUnavailableError, match="HTTP 403: node ids are bound to certificates"):
        run(exchange(pki.issue("bind-anonymous"), handler))
    assert handler.bodies == [BODY], "refused before the handler saw it"
    assert handler.errors == 1, "and counted"
    with pytest.raises(ValueError, match="bind_node_ids needs an ssl context"):
        SyncServer(handler, bind_node_ids=True)
    with pytest.raises(ValueError, match="bind_node_ids needs an ssl context"):
        one_way = TLSConfig(cert=server_tls.cert, key=server_tls.key).server_context()
        SyncServer(handler, ssl=one_way, bind_node_ids=True)
