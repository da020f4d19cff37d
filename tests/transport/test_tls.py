"""TLS on the transport: TLSConfig's checks, mutual TLS, pins, plain http and slow handshakes.

One throwaway CA per module (``tests.tlscerts``); servers run on loopback,
and every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from agentsync.errors import PeerUnavailableError
from agentsync.transport import SyncClient
from agentsync.transport import server as server_module
from agentsync.transport.limits import Limits
from agentsync.transport.tls import TLSConfig, fingerprint
from tests.tlscerts import Pki
from tests.transport.helpers import SYNC_HEAD, FakeHandler, run, serving, started, wait_until

BODY = b"\x91\x01"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node_a(pki: Pki) -> tuple[str, str]:
    return pki.issue("node-a")


@pytest.fixture(scope="module")
def node_b(pki: Pki) -> tuple[str, str]:
    return pki.issue("node-b")


def mutual(pki: Pki, files: tuple[str, str], **options: object) -> TLSConfig:
    cert, key = files
    return TLSConfig(cert=cert, key=key, ca=(pki.ca,), require_client_cert=True, **options)  # type: ignore[arg-type]


async def exchange(server_tls: TLSConfig, client_tls: TLSConfig, handler: FakeHandler) -> bytes:
    """One sync exchange from a client with ``client_tls`` to a server with ``server_tls``."""
    async with (
        serving(handler, ssl=server_tls.server_context()) as server,
        started(SyncClient(timeout=2.0, ssl=client_tls.client_context())) as client,
    ):
        assert server.url.startswith("https://127.0.0.1:")
        return await client.exchange(server.url, BODY)


# -- TLSConfig ------------------------------------------------------------------


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path, pki: Pki) -> None:
    missing = str(tmp_path / "nowhere.pem")
    for options in ({"cert": missing}, {"ca": (missing,)}, {"ca": missing}):
        with pytest.raises(ValueError, match=r"nowhere\.pem"):
            TLSConfig(**options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cannot read the TLS key file .*nowhere\.pem"):
        TLSConfig(cert=pki.ca, key=missing)


def test_files_that_are_not_pem_are_named_when_the_context_is_built(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"junk\.pem"):
        TLSConfig(ca=(str(junk),)).client_context()
    with pytest.raises(ValueError, match=r"junk\.pem"):
        TLSConfig(cert=str(junk)).server_context()
    with pytest.raises(ValueError, match=r"junk\.pem"):
        fingerprint(junk)


def test_inconsistent_options_are_refused(pki: Pki, node_a: tuple[str, str]) -> None:
    cert, key = node_a
    with pytest.raises(ValueError, match="without its certificate"):
        TLSConfig(key=key)
    with pytest.raises(ValueError, match="require_client_cert needs ca"):
        TLSConfig(cert=cert, key=key, require_client_cert=True)
    with pytest.raises(ValueError, match="needs a certificate"):
        TLSConfig(ca=(pki.ca,)).server_context()
    with pytest.raises(TypeError, match="require_client_cert"):
        TLSConfig(cert=cert, key=key, ca=(pki.ca,), require_client_cert=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check_hostname must be a bool"):
        TLSConfig(check_hostname="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        TLSConfig(cert=42)  # type: ignore[arg-type]


def test_pins_are_sha256_hex_and_normalised(node_a: tuple[str, str]) -> None:
    digest = fingerprint(node_a[0])
    colons = ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    assert TLSConfig(pins=frozenset({colons})).pins == {digest}
    assert TLSConfig(pins=digest).pins == {digest}  # type: ignore[arg-type]  # one str: one pin
    for bad in ("ab" * 31, "zz" * 32, digest + "00"):
        with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
            TLSConfig(pins=frozenset({bad}))


def test_contexts_refuse_tls_below_1_2(pki: Pki, node_a: tuple[str, str]) -> None:
    tls = mutual(pki, node_a)
    for context in (tls.server_context(), tls.client_context()):
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


# -- on the wire ------------------------------------------------------------------


def test_mutual_tls_exchanges(pki: Pki, node_a: tuple[str, str], node_b: tuple[str, str]) -> None:
    handler = FakeHandler()
    reply = run(exchange(mutual(pki, node_a), mutual(pki, node_b), handler))
    assert reply == b"echo:" + BODY
    assert handler.errors == 0


def test_a_client_without_a_certificate_is_refused(pki: Pki, node_a: tuple[str, str]) -> None:
    handler = FakeHandler()
    with pytest.raises(PeerUnavailableError):
        run(exchange(mutual(pki, node_a), TLSConfig(ca=(pki.ca,)), handler))
    assert handler.bodies == []
    assert handler.errors == 1, "the failed handshake is counted"


def test_a_server_certificate_from_another_ca_is_refused(
    tmp_path: Path, pki: Pki, node_b: tuple[str, str]
) -> None:
    rogue = Pki(tmp_path, "rogue CA").issue("node-a")  # the right name, the wrong CA
    handler = FakeHandler()
    with pytest.raises(PeerUnavailableError, match="certificate"):
        run(exchange(mutual(pki, rogue), mutual(pki, node_b), handler))
    assert handler.bodies == []


def test_the_client_checks_the_servers_pin(
    pki: Pki, node_a: tuple[str, str], node_b: tuple[str, str]
) -> None:
    handler = FakeHandler()
    server = mutual(pki, node_a)
    wrong = mutual(pki, node_b, pins=frozenset({fingerprint(node_b[0])}))
    with pytest.raises(PeerUnavailableError, match="not pinned"):
        run(exchange(server, wrong, handler))
    assert handler.bodies == [], "nothing is sent to a server whose certificate is not pinned"
    right = mutual(pki, node_b, pins=frozenset({fingerprint(node_b[0]), fingerprint(node_a[0])}))
    assert run(exchange(server, right, handler)) == b"echo:" + BODY


def test_the_server_checks_a_clients_pin(
    pki: Pki, node_a: tuple[str, str], node_b: tuple[str, str]
) -> None:
    handler = FakeHandler()
    server = mutual(pki, node_a, pins=frozenset({fingerprint(node_a[0])}))  # node-b not pinned
    with pytest.raises(PeerUnavailableError):
        run(exchange(server, mutual(pki, node_b), handler))
    assert handler.bodies == []
    assert handler.errors == 1
    server = mutual(pki, node_a, pins=frozenset({fingerprint(node_b[0])}))
    assert run(exchange(server, mutual(pki, node_b), handler)) == b"echo:" + BODY


def test_plain_http_to_a_tls_server_fails_fast_and_is_counted(
    pki: Pki, node_a: tuple[str, str], node_b: tuple[str, str]
) -> None:
    handler = FakeHandler()

    async def main() -> None:
        async with (
            serving(handler, ssl=mutual(pki, node_a).server_context()) as server,
            started(SyncClient(timeout=5.0)) as plain,
            started(SyncClient(timeout=2.0, ssl=mutual(pki, node_b).client_context())) as tls,
        ):
            loop = asyncio.get_running_loop()
            begun = loop.time()
            with pytest.raises(PeerUnavailableError):
                await plain.exchange(server.url.replace("https://", "http://"), BODY)
            assert loop.time() - begun < 2.0, "refused at once, not after a timeout"
            await wait_until(lambda: handler.errors == 1)
            assert await tls.exchange(server.url, BODY) == b"echo:" + BODY, "it still serves"
            await wait_until(lambda: server.gate.open_connections <= 1)

    run(main())
    assert handler.bodies == [BODY]


def test_connections_are_capped_before_their_handshake_and_slow_ones_dropped(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, node_a: tuple[str, str], node_b: tuple[str, str]
) -> None:
    monkeypatch.setattr(server_module, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    handler = FakeHandler()
    limits = Limits(connections_per_remote=1)

    async def main() -> None:
        context = mutual(pki, node_a).server_context()
        async with serving(handler, ssl=context, limits=limits) as server:
            _, silent = await asyncio.open_connection("127.0.0.1", server.port)  # no ClientHello
            await wait_until(lambda: server.gate.open_connections == 1)
            async with started(SyncClient(ssl=mutual(pki, node_b).client_context())) as client:
                with pytest.raises(PeerUnavailableError):  # over the cap: closed, no handshake
                    await client.exchange(server.url, BODY)
                await wait_until(lambda: server.gate.open_connections == 0, timeout=3.0)
                assert await client.exchange(server.url, BODY) == b"echo:" + BODY
            silent.close()

    run(main())
    assert handler.errors >= 2, "the refusal and the timed-out handshake are counted"


async def one_flight(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    """Handshake by hand, then send its last flight and ``request`` in one write; the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
                incoming.write(await reader.read(1 << 16))
        tls.write(request)
        writer.write(outgoing.read())  # the client's Finished and the request, together
        reply = b""
        while b"echo:" not in reply:
            incoming.write(await reader.read(1 << 16))
            with contextlib.suppress(ssl.SSLWantReadError):
                reply += tls.read(1 << 16)
        return reply
    finally:
        writer.close()


def test_a_request_sent_with_the_handshakes_last_flight_is_served(
    pki: Pki, node_a: tuple[str, str], node_b: tuple[str, str]
) -> None:
    """Bytes decrypted as the handshake ends reach aiohttp: buffered, not dropped."""
    handler = FakeHandler()
    request = f"{SYNC_HEAD}Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY

    async def main() -> bytes:
        async with serving(handler, ssl=mutual(pki, node_a).server_context()) as server:
            return await one_flight(server.port, mutual(pki, node_b).client_context(), request)

    assert run(main(), timeout=5.0).startswith(b"HTTP/1.1 200 OK")
    assert handler.bodies == [BODY]
