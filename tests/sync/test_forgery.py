"""CRDT-level forgery: dots claimed under the receiver's own replica id, int64, clock skew.

Every refusal is of the whole message: the state, its context, the head and
the acks stay as they were (``refused``), and the receiver still syncs with
its honest peers afterwards.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
import pytest

from agentsync.crdt import GCounter, LWWRegister, ORMap, ORSet, encode
from agentsync.errors import DecodeError, ForgedDotsError, ProtocolError
from agentsync.sync import Piece, SyncEngine, decode_message, encode_message
from tests.sync.simnet import CLOCK_BASE_NS, SimClock, SimNet, adding
from tests.sync.test_malformed import CONTEXT, DELTAS, from_peer, receiver, refused, valid_raw


def _ahead_of(engine: SyncEngine, writes: int = 3) -> ORMap:
    """A delta of ``engine``'s own replica id with dots it never issued (a copy wrote on)."""
    twin = engine.state.copy()
    delta = twin.update("tags", ORSet, adding("forged-0"))
    for k in range(1, writes):
        delta.merge(twin.update("tags", ORSet, adding(f"forged-{k}")))
    return delta


def _forged_by(engine: SyncEngine) -> list[tuple[str, dict[str, Any]]]:
    """Every field of a message that can claim dots: deltas, a context, a reported vector."""
    own = engine.state.replica_id
    issued = engine.state.context.version_vector[own]
    forged = _ahead_of(engine)
    return [
        ("delta", {"deltas": (forged,), "base": 0}),
        ("one of several deltas", {"deltas": (ORMap("z").update("t", ORSet, adding("x")), forged)}),
        ("context", {"context": forged.context}),
        ("vector", {"vector": {own: issued + 1}}),
    ]


@pytest.mark.parametrize("field", ["delta", "one of several deltas", "context", "vector"])
def test_a_claim_of_unissued_own_dots_is_refused_in_a_request_and_a_response(field: str) -> None:
    net, engine = receiver()
    assert engine.state.context.version_vector.get(engine.state.replica_id), "n00 wrote"
    fields = dict(_forged_by(engine))[field]
    before = (engine.metrics.errors, engine.metrics.forged)
    refused(engine, from_peer(net, **fields), ForgedDotsError)
    response = from_peer(net, is_response=True, **fields)
    refused(engine, response, ForgedDotsError, as_request=False)
    assert (engine.metrics.errors, engine.metrics.forged) == (before[0] + 2, before[1] + 2)
    net.settle(max_rounds=5)  # and it still syncs with everyone


def test_the_error_names_the_sender_the_replica_and_the_dots() -> None:
    net, engine = receiver()
    own = engine.state.replica_id
    issued = engine.state.context.version_vector[own]
    with pytest.raises(ForgedDotsError) as caught:
        engine.on_request(from_peer(net, deltas=(_ahead_of(engine, 2),)))
    error = caught.value
    assert (error.sender, error.replica_id, error.claimed, error.issued) == (
        "n01",
        own,
        issued + 2,
        issued,
    )
    assert "n01" in str(error) and own in str(error)


def test_a_snapshot_holding_unissued_own_dots_is_refused() -> None:
    net, engine = receiver()
    twin = engine.state.copy()
    twin.update("tags", ORSet, adding("forged"))
    message = from_peer(net, piece=Piece(7, 1, 0, 1, encode(twin)))
    refused(engine, message, ForgedDotsError)
    assert engine.metrics.forged == 1


def test_own_dots_that_were_issued_come_back_and_are_accepted() -> None:
    """The echo of this replica's own writes is no forgery: a peer may hold and send them."""
    net, engine = receiver()
    own = engine.state.update("tags", ORSet, adding("from n00"))  # issued here
    issued = engine.state.context.version_vector[engine.state.replica_id]
    peer = net.engines["n01"]
    peer.state.merge(own)
    echo = peer.state.update("tags", ORSet, adding("from n01"))
    echo.merge(own)  # n01's interval carries n00's write back with its own
    message = from_peer(net, deltas=(echo,), base=0, seq=peer.head)
    engine.on_request(decode_message(encode_message(message)))
    assert {"from n00", "from n01"} <= engine.state["tags"].value
    assert engine.state.context.version_vector[engine.state.replica_id] == issued
    assert engine.metrics.forged == 0


# -- signed 64 bits, at the message level --------------------------------------------------


def _counter_delta_raw() -> list[Any]:
    """A delta (ORMap of one GCounter) as its msgpack array, to edit."""
    delta = ORMap("z").update("hits", GCounter, lambda c: c.increment(5))
    return msgpack.unpackb(encode(delta), raw=False)  # type: ignore[no-any-return]


def _packed(raw: Any) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def test_a_counter_total_beyond_int64_is_refused() -> None:
    delta = _counter_delta_raw()
    body = delta[5]  # [keys, tags, bodies]; the GCounter's body is [runs, counters, totals]
    assert body[2][0][2] == [5]
    for total in (2**63, 2**64 - 1):  # msgpack holds nothing below -2**63
        bad = [*delta[:5], [body[0], body[1], [[*body[2][0][:2], [total]]]]]
        raw = valid_raw()
        raw[DELTAS] = [_packed(bad)]
        with pytest.raises(DecodeError):
            decode_message(_packed(raw))


def test_a_total_just_inside_int64_decodes() -> None:
    """The bound is exact: the largest int64 is a valid (if absurd) total."""
    delta = _counter_delta_raw()
    body = delta[5]
    good = [*delta[:5], [body[0], body[1], [[*body[2][0][:2], [2**63 - 1]]]]]
    raw = valid_raw()
    raw[DELTAS] = [_packed(good)]
    assert decode_message(_packed(raw)).deltas[0]["hits"].value == 2**63 - 1


def test_version_vector_entries_beyond_int64_are_refused() -> None:
    delta = _counter_delta_raw()
    ids, cloud = delta[3], delta[4][1]
    raw = valid_raw()
    raw[DELTAS] = [_packed([*delta[:4], [[0, 2**63], cloud], delta[5]])]  # in a delta
    with pytest.raises(DecodeError):
        decode_message(_packed(raw))
    raw = valid_raw()
    raw[DELTAS] = None
    raw[CONTEXT] = [ids, [[0, 2**63], []]]  # in a repair context
    with pytest.raises(DecodeError):
        decode_message(_packed(raw))
    assert len(raw) == 14
    reported = _packed([["z"], [2**63]])  # in a reported vector (revision 1.2)
    with pytest.raises(DecodeError):
        decode_message(_packed([*raw, None, reported]))
    with pytest.raises(DecodeError):
        decode_message(_packed([*raw, None, _packed([["z"], [2**64 - 1]])]))


# -- clock skew: refused, held by the sender, accepted once the clock catches up ------------


class _Skewed:
    """A wall clock ``ahead_ns`` ahead of the shared simulated clock."""

    def __init__(self, base: SimClock, ahead_ns: int) -> None:
        self.base = base
        self.ahead_ns = ahead_ns

    def __call__(self) -> int:
        return self.base() + self.ahead_ns


def _refused_for_skew(net: SimNet, a: str, b: str) -> bool:
    """Exchange ``a`` with ``b``; True if a side refused the other for its clock."""
    try:
        net.exchange(a, b)
    except ProtocolError as exc:
        assert "ahead of the local clock" in str(exc)
        return True
    return False


def test_a_skewed_peers_write_is_refused_until_the_clock_catches_up() -> None:
    """Two honest nodes converge; the skewed node's delta waits in its buffer, then lands.

    The receiver refuses the whole message (a partial merge would leave the
    skewed dot in the context without its write), so the skewed node keeps
    the delta and sends it again each exchange. Once the receivers' wall
    clocks are within the skew bound of its timestamp, it is accepted, and
    every node converges on it (it is the newest write).
    """
    net = SimNet(5, 3, max_message_bytes=16384)
    skew = 5 * 60 * 10**9  # five minutes; the bound is one
    skewed = net.engines["n02"] = SyncEngine(
        "n02", cluster=net.config["cluster"], state=ORMap("n02.0", clock=_Skewed(net.clock, skew))
    )
    net.write("n00", "title", LWWRegister, lambda r: r.set("honest"))
    net.write("n02", "title", LWWRegister, lambda r: r.set("from the future"))
    refusals = 0
    for _ in range(4):
        net.exchange("n00", "n01")
        for honest in ("n00", "n01"):
            for a, b in ((honest, "n02"), ("n02", honest)):
                refusals += _refused_for_skew(net, a, b)
    assert refusals >= 8, "every exchange that carries the future write is refused"
    assert net.engines["n00"].state.value == net.engines["n01"].state.value
    assert net.engines["n00"].state["title"].value == "honest"
    assert skewed.state["title"].value == "from the future"
    net.clock.ns += skew  # the wall clocks catch up
    net.settle()
    assert net.equal()
    assert net.engines["n01"].state["title"].value == "from the future"


def test_a_timestamp_near_the_end_of_int64_is_refused_for_good() -> None:
    net, engine = receiver()
    far = ORMap("z", clock=lambda: 2**63 - 10)
    delta = far.update("title", LWWRegister, lambda r: r.set("2262"))
    refused(engine, from_peer(net, deltas=(delta,)), ProtocolError)
    assert CLOCK_BASE_NS < 2**63 - 10


def test_a_skewed_delta_among_several_is_a_protocol_error() -> None:
    """Regression: the join of an interval's deltas raised ClockSkewError (a 500 over HTTP)."""
    net, engine = receiver()
    future = ORMap("z", clock=lambda: CLOCK_BASE_NS + 10**15)  # ahead of real time too
    skewed = future.update("title", LWWRegister, lambda r: r.set("from the future"))
    honest = ORMap("y").update("tags", ORSet, adding("x"))
    for deltas in ((honest, skewed), (skewed, honest)):
        refused(engine, from_peer(net, deltas=deltas), ProtocolError)
    message = replace(from_peer(net, deltas=(honest, skewed)), is_response=True)
    refused(engine, message, ProtocolError, as_request=False)
