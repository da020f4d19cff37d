"""A hypothesis fuzz of ``POST /v1/sync`` on a real node over loopback.

Random bytes, and mutations of valid requests (bytes flipped, inserted,
deleted, cut, spliced; msgpack items replaced): the answer is a 200 (a
mutation can still be a valid message) or a 4xx, never a 5xx, a dropped
connection or a hang; afterwards the node still converges with an honest
peer. Each runs twice: in the clear, and with a cluster secret, where the
fuzzer holds the key (a member sending garbage, sealed: it reaches the
engine) and also mutates sealed requests (it must stop at the envelope's
401). Derandomized and bounded, so it takes a few seconds and replays the
same inputs on every run. The decode-only target, for longer runs, is
``fuzz/decode_target.py`` (``make fuzz``).
"""

from __future__ import annotations

import functools
import http.client
import random
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentsync import Node
from agentsync.errors import DecodeError
from agentsync.security import Channel, Keyring
from agentsync.sync import decode_message
from agentsync.transport.wire import MSGPACK, SEALED
from fuzz.decode_target import mutate, seeds
from tests.node.helpers import converge, run

VICTIM = "fuzz-b"
"""The seeds' requests are addressed to this node id (and some come from it)."""
SECRET = b"fuzzing-secret-of-32-bytes-long!"
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def post(port: int, body: bytes, kind: str) -> int:
    """POST one body to ``/v1/sync``; the status (an error if no answer within 5 s)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", "/v1/sync", body, {"Content-Type": kind})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def answered_sanely(node: Node, body: bytes) -> None:
    status = post(node.port, body, MSGPACK if node.keyring is None else SEALED)
    event(f"HTTP {status}")  # --hypothesis-show-statistics shows how deep the inputs get
    assert status == 200 or 400 <= status < 500, f"{status} for {body[:64]!r}..."


@pytest.fixture(params=[None, SECRET], ids=["clear", "secret"])
def nodes(request: pytest.FixtureRequest) -> Iterator[tuple[Node, Node]]:
    """The fuzzed node and an honest peer, each on a loop in its own thread."""
    secret = request.param
    victim = Node.start_background(VICTIM, gossip_interval=0.05, secret=secret)
    honest = Node.start_background(
        "honest", peers=[victim.url], gossip_interval=0.05, secret=secret
    )
    victim.add_peer(honest.url)
    try:
        yield victim, honest
    finally:
        victim.stop()
        honest.stop()


def still_converges(victim: Node, honest: Node) -> None:
    errors = victim.metrics.errors
    victim.counter("after").increment()
    honest.set("tags").add("honest")
    run(converge([victim, honest], "the fuzzed node converges with its honest peer"))
    assert victim.value["after"] == 1 and "honest" in victim.value["tags"]
    refused = errors + (victim.auth_failures if victim.keyring is not None else 0)
    assert refused > 0, "the fuzz reached the node's refusals"


@functools.cache
def requests() -> list[bytes]:
    """The seeds' requests: valid messages to mutate."""
    return [data for data in seeds() if _is_request(data)]


def _is_request(data: bytes) -> bool:
    try:
        return not decode_message(data).is_response
    except DecodeError:  # a replica's encoding, not a message
        return False


def test_random_bytes_get_4xx(nodes: tuple[Node, Node]) -> None:
    victim, honest = nodes

    @FUZZ
    @given(st.binary(max_size=2048))
    def fuzz(body: bytes) -> None:
        answered_sanely(victim, body)

    fuzz()
    still_converges(victim, honest)


_ITEM = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.integers(-1, 2**63 - 1), max_size=4),
    st.sampled_from([b"", [[]], {"k": 1}, [None] * 5]),
)


def _substitute(data: bytes, index: int, value: Any) -> bytes:
    try:
        raw = list(msgpack.unpackb(data, raw=False))
    except ValueError:  # a sealed envelope is no msgpack array: flip a byte instead
        return (
            data[: index % len(data)]
            + bytes([data[index % len(data)] ^ 1])
            + data[index % len(data) + 1 :]
        )
    raw[index % len(raw)] = value
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def test_mutated_valid_requests_get_200_or_4xx(nodes: tuple[Node, Node]) -> None:
    victim, honest = nodes
    valid = requests()
    assert len(valid) >= 6
    keyring = victim.keyring
    channel = None if keyring is None else Channel(Keyring(SECRET, cluster="default"), "fuzz-a")

    @FUZZ
    @given(
        st.sampled_from(valid),
        st.one_of(
            st.tuples(st.just("bytes"), st.randoms(use_true_random=False)),
            st.tuples(st.just("field"), st.integers(0, 20), _ITEM),
        ),
        st.booleans(),
    )
    def fuzz(request: bytes, how: tuple[Any, ...], seal_first: bool) -> None:
        if channel is not None and seal_first:
            request = channel.seal_request(request)[0]  # the mutation hits the envelope
        if how[0] == "bytes":
            rng: random.Random = how[1]
            body = mutate(rng, request, valid)
        else:
            body = _substitute(request, how[1], how[2])
        if channel is not None and not seal_first:
            body = channel.seal_request(body)[0]  # a member's garbage: it reaches decode
        answered_sanely(victim, body)

    fuzz()
    still_converges(victim, honest)
