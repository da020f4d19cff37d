"""Malformed and unacceptable messages: the right error, and nothing changed.

``decode_message`` must raise DecodeError, and nothing else, for any bytes
that are not a valid message. A valid message the engine cannot accept
raises ClusterMismatchError, ProtocolError or DecodeError, and leaves the
receiver's state, context, head and per-peer acks as they were.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import GCounter, LWWRegister, ORMap, ORSet, encode
from agentsync.errors import ClusterMismatchError, DecodeError, ProtocolError
from agentsync.sync import (
    PROTOCOL_VERSION,
    Piece,
    SyncEngine,
    SyncMessage,
    decode_message,
    encode_message,
)
from agentsync.sync.messages import MAX_DELTAS, MAX_MEMBERS, MAX_PIECES
from tests.sync.simnet import CLOCK_BASE_NS, SimNet, adding, snapshot_of

SEED = 99


@functools.cache
def _template() -> tuple[SimNet, tuple[tuple[str, bytes], ...]]:
    """A converged three-node net, and every message its run put on the wire."""
    net = SimNet(SEED, 3, max_message_bytes=16384)
    net.recorded = []
    big = net.engines["n02"]
    for k in range(3000):  # enough for a snapshot of two pieces
        big.record_local(big.state.update("big", ORSet, adding(f"item-{k:05d}")))
    net.run(8, write_prob=0.8)
    net.settle()
    corpus = tuple(net.recorded)
    net.recorded = None
    return net, corpus


def receiver() -> tuple[SimNet, SyncEngine]:
    """A fresh copy of the template's n00, which knows n01 and n02."""
    net, _ = _template()
    net = copy.deepcopy(net)
    return net, net.engines["n00"]


def corpus() -> tuple[tuple[str, bytes], ...]:
    return _template()[1]


def valid_raw() -> list[Any]:
    """The msgpack array of a valid request of n01 to n00 carrying one delta."""
    net, _ = receiver()
    sender = net.engines["n01"]
    sender.record_local(sender.state.update("tags", ORSet, lambda s: s.add("fresh")))
    data = encode_message(sender.request("n00"))
    raw = msgpack.unpackb(data, raw=False)
    assert raw[8], "the template request must carry a delta"
    return raw  # type: ignore[no-any-return]


def context_raw() -> list[Any]:
    """The msgpack array of a valid context message."""
    net, _ = receiver()
    return msgpack.unpackb(encode_message(net.engines["n01"].request(None)), raw=False)  # type: ignore[no-any-return]


def with_field(raw: list[Any], index: int, value: Any) -> bytes:
    changed = list(raw)
    changed[index] = value
    return msgpack.packb(changed, use_bin_type=True)  # type: ignore[no-any-return]


# -- decode_message: DecodeError and nothing else ------------------------------------------

V, FLAGS, SENDER, CLUSTER, EPOCH, SEQ, ACK, CONTEXT, DELTAS, PIECE, WANT, BASE, _, REFUSALS = range(
    14
)
BAD_FIELDS: list[tuple[str, int, Any]] = [
    ("version 2", V, PROTOCOL_VERSION + 1),
    ("version 0", V, 0),
    ("version str", V, "1"),
    ("version nil", V, None),
    ("flags 64", FLAGS, 64),  # bit 4 is the observer flag (1.3), bit 5 limited (1.4)
    ("flags negative", FLAGS, -1),
    ("flags bool", FLAGS, True),
    ("sender empty", SENDER, ""),
    ("sender int", SENDER, 5),
    ("sender too long", SENDER, "x" * 300),
    ("sender bin", SENDER, b"n01"),
    ("cluster empty", CLUSTER, ""),
    ("cluster too long", CLUSTER, "c" * 200),
    ("epoch negative", EPOCH, -1),
    ("epoch over int64", EPOCH, 2**63),
    ("epoch float", EPOCH, 1.5),
    ("seq negative", SEQ, -5),
    ("seq str", SEQ, "3"),
    ("ack one item", ACK, [1]),
    ("ack three items", ACK, [1, 2, 3]),
    ("ack str", ACK, "ack"),
    ("ack negative seq", ACK, [1, -1]),
    ("ack float epoch", ACK, [1.0, 2]),
    ("ack nested", ACK, [[1], 2]),
    ("context str", CONTEXT, "ctx"),
    ("context one item", CONTEXT, [["n01.0"]]),
    ("context garbage", CONTEXT, [["n01.0"], "garbage"]),
    ("context repeated ids", CONTEXT, [["a", "a"], [[0, 1], []]]),
    ("context counter 0", CONTEXT, [["a"], [[0, 0], []]]),
    ("context index out of range", CONTEXT, [["a"], [[3, 1], []]]),
    ("context odd vector", CONTEXT, [["a"], [[0], []]]),
    ("context bad cloud range", CONTEXT, [["a"], [[], [0, 1]]]),
    ("context cloud length 0", CONTEXT, [["a"], [[], [0, 5, 0]]]),
    ("context empty id", CONTEXT, [[""], [[0, 1], []]]),
    ("deltas empty array", DELTAS, []),
    ("deltas str items", DELTAS, ["delta"]),
    ("deltas garbage bin", DELTAS, [b"\x93garbage"]),
    ("deltas bin not array", DELTAS, b"delta"),
    ("deltas not an ORMap", DELTAS, [encode(ORSet("z"))]),
    ("deltas a GCounter", DELTAS, [encode(GCounter("z"))]),
    ("deltas over MAX_DELTAS", DELTAS, [encode(ORMap("z"))] * (MAX_DELTAS + 1)),
    ("piece four items", PIECE, [1, 0, 0, 1]),
    ("piece transfer 0", PIECE, [0, 0, 0, 1, b"x"]),
    ("piece index = count", PIECE, [1, 0, 1, 1, b"x"]),
    ("piece index > count", PIECE, [1, 0, 7, 2, b"x"]),
    ("piece count 0", PIECE, [1, 0, 0, 0, b"x"]),
    ("piece count over MAX_PIECES", PIECE, [1, 0, 0, MAX_PIECES + 1, b"x"]),
    ("piece negative index", PIECE, [1, 0, -1, 2, b"x"]),
    ("piece empty data", PIECE, [1, 0, 0, 1, b""]),
    ("piece str data", PIECE, [1, 0, 0, 1, "x"]),
    ("want one item", WANT, [0]),
    ("want negative", WANT, [-1, 0]),
    ("want str", WANT, "more"),
    ("base negative", BASE, -1),
    ("base str", BASE, "0"),
    ("base nil", BASE, None),
    ("refusals negative", REFUSALS, -1),
    ("refusals over int64", REFUSALS, 2**63),
    ("refusals str", REFUSALS, "1"),
    ("refusals float", REFUSALS, 1.0),
    ("refusals nil", REFUSALS, None),
    ("refusals bool", REFUSALS, True),
]


@pytest.mark.parametrize(
    ("index", "value"),
    [(index, value) for _, index, value in BAD_FIELDS],
    ids=[label for label, _, _ in BAD_FIELDS],
)
def test_a_wrong_field_raises_decode_error(index: int, value: Any) -> None:
    data = with_field(valid_raw(), index, value)
    with pytest.raises(DecodeError):
        decode_message(data)


BAD_MEMBERS: list[tuple[str, Any]] = [
    ("str", "n02"),
    ("a pair, not a list of pairs", ["n02", "http://10.0.0.2:1"]),
    ("one item", [["n02"]]),
    ("three items", [["n02", "http://10.0.0.2:1", 0]]),
    ("empty id", [["", "http://10.0.0.2:1"]]),
    ("int url", [["n02", 5]]),
    ("not http", [["n02", "file:///etc/passwd"]]),
    ("url too long", [["n02", "http://" + "h" * 300]]),
    ("over MAX_MEMBERS", [["n02", "http://10.0.0.2:1"]] * (MAX_MEMBERS + 1)),
]


@pytest.mark.parametrize("value", [v for _, v in BAD_MEMBERS], ids=[k for k, _ in BAD_MEMBERS])
def test_wrong_members_raise_decode_error(value: Any) -> None:
    raw = [*valid_raw(), value]
    with pytest.raises(DecodeError):
        decode_message(msgpack.packb(raw, use_bin_type=True))


def test_members_travel_and_a_message_without_them_has_none() -> None:
    _, engine = receiver()
    members = (("n02", "http://10.0.0.2:7000"), ("n03", "https://[fe80::1%25eth0]:7000"))
    message = replace(engine.request(None), members=members)
    assert decode_message(encode_message(message)).members == members
    assert decode_message(encode_message(engine.request(None))).members == ()


def test_a_context_that_fails_validation_raises_decode_error() -> None:
    raw = context_raw()
    ids, (vector, cloud) = raw[CONTEXT]
    assert vector, "the template context must have a version vector"
    bad_vectors = [
        [vector[0], 0, *vector[2:]],  # a counter of 0
        [*vector, vector[0], vector[1]],  # a replica twice
        [len(ids) + 5, 1],  # no such replica
    ]
    for bad in bad_vectors:
        with pytest.raises(DecodeError):
            decode_message(with_field(raw, CONTEXT, [ids, [bad, cloud]]))
    with pytest.raises(DecodeError):
        decode_message(with_field(raw, CONTEXT, [[*ids, ids[0]], [vector, cloud]]))


BAD_WHOLES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("reserved byte", b"\xc1"),
    ("a map", msgpack.packb({"v": 1})),
    ("an int", msgpack.packb(1)),
    ("ten items", msgpack.packb([1, 0, "a", "b", 1, 0, None, None, None, None])),
    ("eleven items (no base)", msgpack.packb([1, 0, "a", "b", 1, 0, None, None, None, None, None])),
    ("over MAX_DELTAS items", msgpack.packb([1, 0, "a", "b", 1, 0] + [None] * 70)),
    ("an ext type", msgpack.packb(msgpack.ExtType(1, b"x"))),
    ("nested too deep", b"\x91" * 10_000 + b"\xc0"),
]


@pytest.mark.parametrize("data", [d for _, d in BAD_WHOLES], ids=[n for n, _ in BAD_WHOLES])
def test_bytes_that_are_no_message_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(data)


def test_non_bytes_raise_decode_error() -> None:
    for thing in (None, "text", 5, [1, 2]):
        with pytest.raises(DecodeError):
            decode_message(thing)  # type: ignore[arg-type]


def test_every_truncation_of_a_valid_message_raises_decode_error() -> None:
    for _, data in corpus()[:40]:
        for cut in range(len(data) - 1, -1, -max(1, len(data) // 50)):
            with pytest.raises(DecodeError):
                decode_message(data[:cut])


def test_a_revision_1_0_message_of_13_items_decodes_without_a_count_of_refusals() -> None:
    raw = valid_raw()
    assert len(raw) == REFUSALS + 1 and raw[REFUSALS] == 0
    old = decode_message(msgpack.packb(raw[:REFUSALS], use_bin_type=True))
    new = decode_message(msgpack.packb(raw, use_bin_type=True))
    assert old.refusals is None and new.refusals == 0
    assert replace(old, refusals=0) == new
    assert decode_message(encode_message(old)) == old, "a 1.0 message re-encodes as one"


def test_trailing_items_are_ignored_for_later_revisions() -> None:
    raw = valid_raw()
    assert len(raw) == 14, "the template is a revision 1.1 message without members"
    future = [*raw, None, None, None, "future", 1]  # after revision 1.2's members, vector, prune
    message = decode_message(msgpack.packb(future, use_bin_type=True))
    assert message == decode_message(msgpack.packb(raw, use_bin_type=True))


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_random_bytes_raise_decode_error_or_decode(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


def test_a_tiny_message_cannot_expand_into_a_huge_context() -> None:
    """Regression: a 36-byte context of the range (0, 2, 4_000_000) took 2.5 s and 530 MB."""
    raw = [1, 0, "evil", "default", 1, 0, None, [["x"], [[], [0, 2, 1 << 18]]], None, None, None]
    data = msgpack.packb(raw, use_bin_type=True)
    tracemalloc.start()
    try:
        decode_message(data)
    except DecodeError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 << 20, f"{len(data)} bytes took {peak >> 20} MiB to decode"


# -- the engine: the right error, nothing changed -------------------------------------------


def refused(
    engine: SyncEngine, message: SyncMessage, error: type[Exception], *, as_request: bool = True
) -> None:
    """``message`` (sent over the wire) raises ``error`` and changes nothing that matters."""
    before = snapshot_of(engine)
    received = decode_message(encode_message(message))
    with pytest.raises(error):
        if as_request:
            engine.on_request(received)
        else:
            engine.on_response(received)
    assert snapshot_of(engine) == before


def from_peer(net: SimNet, **fields: Any) -> SyncMessage:
    """A message of n01 to n00, with its real epoch and an ack of n00's epoch."""
    n00, n01 = net.engines["n00"], net.engines["n01"]
    base = SyncMessage("n01", n01.cluster, n01.epoch, n01.head, ack=(n00.epoch, 0))
    return replace(base, **fields)


def test_a_message_of_another_cluster_raises_cluster_mismatch() -> None:
    net, engine = receiver()
    message = replace(net.engines["n01"].request("n00"), cluster="elsewhere")
    refused(engine, message, ClusterMismatchError)
    refused(engine, replace(message, is_response=True), ClusterMismatchError, as_request=False)


def test_a_message_from_the_receivers_own_id_raises_protocol_error() -> None:
    net, engine = receiver()
    own = replace(net.engines["n01"].request("n00"), sender="n00")
    refused(engine, own, ProtocolError)
    refused(engine, replace(own, is_response=True), ProtocolError, as_request=False)


def test_a_response_as_a_request_and_back_raise_protocol_error() -> None:
    net, engine = receiver()
    request = net.engines["n01"].request("n00")
    refused(engine, replace(request, is_response=True), ProtocolError)
    refused(engine, request, ProtocolError, as_request=False)


def _delta_with_int_name() -> ORMap:
    return ORMap("z").update(5, GCounter, lambda c: c.increment())


def _far_future_register() -> ORMap:
    future = ORMap("z", clock=lambda: CLOCK_BASE_NS + 10**15)  # 11 days ahead
    return future.update("title", LWWRegister, lambda r: r.set("from the future"))


def _a_delta() -> ORMap:
    return ORMap("z").update("tags", ORSet, lambda s: s.add("sneaky"))


_TRANSFERS = itertools.count(7)


def _snapshot_of(data: bytes) -> Callable[[SimNet], SyncMessage]:
    """A one-piece snapshot; each message a new transfer (a failed one is not retried)."""
    return lambda net: from_peer(net, piece=Piece(next(_TRANSFERS), 1, 0, 1, data))


def _with_delta(make: Callable[[], ORMap]) -> Callable[[SimNet], SyncMessage]:
    return lambda net: from_peer(net, deltas=(make(),))


UNACCEPTABLE: list[tuple[str, Callable[[SimNet], SyncMessage], type[Exception]]] = [
    ("int top-level name", _with_delta(_delta_with_int_name), ProtocolError),
    ("timestamp 11 days ahead", _with_delta(_far_future_register), ProtocolError),
    ("snapshot that is a delta", _snapshot_of(encode(_a_delta())), ProtocolError),
    ("snapshot of garbage", _snapshot_of(b"\x93garbage"), DecodeError),
    ("snapshot of an ORSet", _snapshot_of(encode(ORSet("z"))), DecodeError),
]


@pytest.mark.parametrize(
    ("make", "error"),
    [(make, error) for _, make, error in UNACCEPTABLE],
    ids=[label for label, _, _ in UNACCEPTABLE],
)
def test_an_unacceptable_message_changes_nothing(
    make: Callable[[SimNet], SyncMessage], error: type[Exception]
) -> None:
    net, engine = receiver()
    errors = engine.metrics.errors
    refused(engine, make(net), error)
    refused(engine, replace(make(net), is_response=True), error, as_request=False)
    assert engine.metrics.errors == errors + 2
    net.settle(max_rounds=5)  # and the receiver still syncs with everyone


def test_an_unacceptable_message_with_another_epoch_changes_nothing() -> None:
    """Regression: the sender's record was replaced before the message was refused."""
    net, engine = receiver()
    message = from_peer(net, piece=Piece(7, 1, 0, 1, b"\x93garbage"))
    refused(engine, replace(message, epoch=message.epoch + 1), DecodeError)


# -- fuzzing: byte mutations of valid messages ----------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("xor"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
)


def mutate(data: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    out = bytearray(data)
    for kind, where, *arg in mutations:
        at = where % max(1, len(out))
        if kind == "xor" and out:
            out[at] ^= arg[0]
        elif kind == "set" and out:
            out[at] = arg[0]
        elif kind == "insert":
            out[at:at] = arg[0]
        elif kind == "delete":
            del out[at : at + arg[0]]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


@settings(max_examples=120)
@given(st.integers(0, 1 << 20), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_messages_raise_only_the_documented_errors(
    pick: int, mutations: list[tuple[Any, ...]]
) -> None:
    messages = corpus()
    _, original = messages[pick % len(messages)]
    data = mutate(original, mutations)
    try:
        message = decode_message(data)
    except DecodeError:
        return
    _, engine = receiver()
    before = snapshot_of(engine)
    try:
        if message.is_response:
            engine.on_response(message)
        else:
            engine.on_request(message)
    except (ProtocolError, DecodeError):
        assert snapshot_of(engine) == before, f"seed={SEED}: a refused message changed it"
