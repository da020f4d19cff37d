"""The wire codec: ``decode(encode(x))`` gives back ``x``, exactly, for every type.

States come from random histories on two or three replicas (see
``codec_strategies``); deltas and delta groups are round-tripped too.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import (
    CRDT,
    CRDT_TYPES,
    CausalContext,
    EWFlag,
    GCounter,
    GSet,
    HybridLogicalClock,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    decode,
    encode,
)
from agentsync.crdt.codec import (
    COMPRESS_MIN_BYTES,
    FORMAT_VERSION,
    MIN_CLOUD_DOTS,
    encode_decodable,
)
from agentsync.crdt.group import LocalGroup
from agentsync.errors import DecodeError
from tests.crdt.codec_strategies import (
    BASE_NS,
    INT64_MAX,
    INT64_MIN,
    FakeWall,
    canon,
    keys,
    make,
    read,
    scenarios,
    values,
)

KINDS = pytest.mark.parametrize("kind", CRDT_TYPES, ids=lambda k: k.__name__)


def unpack(data: bytes) -> Any:
    """The raw msgpack array of an encoding (inflated when it is deflated)."""
    raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    if raw[1] == "z":
        raw = msgpack.unpackb(zlib.decompress(raw[3]), raw=False, use_list=True)
    return raw


def pack(raw: Any) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def assert_same_replica(decoded: Any, original: Any) -> None:
    """Everything a full state round trip must keep."""
    assert type(decoded) is type(original)
    assert decoded == original
    assert original == decoded
    assert decoded.replica_id == original.replica_id
    assert not decoded.is_delta
    assert decoded.context == original.context
    assert read(decoded) == read(original)
    assert encode(decoded) == encode(original)  # nothing lost, nothing reordered


def assert_same_delta(decoded: Any, original: Any, replicas: list[Any]) -> None:
    """What a delta round trip must keep, checked through the public API.

    ``decoded == original`` is checked on its own, in
    ``test_delta_round_trip_is_equal``.
    """
    assert type(decoded) is type(original)
    assert decoded.is_delta
    assert decoded.replica_id == original.replica_id
    assert set(decoded.context) == set(original.context)
    assert read(decoded) == read(original)
    for replica in replicas:
        via_original = replica.copy()
        via_original.merge(original)
        via_decoded = replica.copy()
        via_decoded.merge(decoded)
        assert via_decoded == via_original
        assert read(via_decoded) == read(via_original)
    again = decode(encode(decoded))
    assert again == decoded
    assert encode(again) == encode(decoded)


# -- reachable states -----------------------------------------------------------


@KINDS
@settings(max_examples=60)
@given(data=st.data())
def test_full_states_round_trip(kind: type[CRDT], data: st.DataObject) -> None:
    scenario = data.draw(scenarios(kind))
    for replica in scenario.replicas:
        before = replica.copy()
        decoded = decode(encode(replica))
        assert_same_replica(decoded, replica)
        assert replica == before  # encode does not touch its input


@KINDS
@settings(max_examples=60)
@given(data=st.data())
def test_deltas_round_trip(kind: type[CRDT], data: st.DataObject) -> None:
    scenario = data.draw(scenarios(kind))
    for delta in scenario.deltas:
        decoded = decode(encode(delta))
        assert_same_delta(decoded, delta, scenario.replicas)


@KINDS
def test_delta_round_trip_is_equal(kind: type[CRDT]) -> None:
    replica = make(kind, "a")
    write: dict[type[CRDT], Callable[[Any], CRDT]] = {
        GCounter: lambda r: r.increment(),
        PNCounter: lambda r: r.decrement(),
        GSet: lambda r: r.add("x"),
        ORSet: lambda r: r.add("x"),
        LWWRegister: lambda r: r.set("x"),
        MVRegister: lambda r: r.set("x"),
        EWFlag: lambda r: r.enable(),
        LWWMap: lambda r: r.set("k", "x"),
        ORMap: lambda r: r.update("k", GCounter, lambda c: c.increment()),
    }
    delta = write[kind](replica)
    assert decode(encode(delta)) == delta


@KINDS
def test_empty_replica_round_trips(kind: type[CRDT]) -> None:
    replica = make(kind, "a")
    assert_same_replica(decode(encode(replica)), replica)


def test_large_states_are_deflated_and_round_trip() -> None:
    replica = ORSet("a")
    for i in range(400):
        replica.add(f"element-{i}")
    data = encode(replica)
    raw = msgpack.unpackb(data, raw=False)
    assert raw[0] == FORMAT_VERSION
    assert raw[1] == "z"
    assert len(data) < len(zlib.decompress(raw[3]))
    assert_same_replica(decode(data), replica)


def test_large_incompressible_states_stay_plain() -> None:
    register = MVRegister("a")
    register.set(random.Random(7).randbytes(2 * COMPRESS_MIN_BYTES))
    data = encode(register)
    assert len(data) >= COMPRESS_MIN_BYTES
    assert msgpack.unpackb(data, raw=False)[1] == MVRegister.TAG
    assert_same_replica(decode(data), register)


def test_encode_decodable_is_none_exactly_when_decode_refuses() -> None:
    replica = ORSet("a")
    group = LocalGroup(replica)
    for _ in range(MIN_CLOUD_DOTS // 2 + 1):  # a body of one key under a cloud past the bound
        group.add(replica.add("x"))
        group.add(replica.remove("x"))
    cancelled = group.build()
    assert encode_decodable(cancelled) is None
    with pytest.raises(DecodeError, match="cloud"):
        decode(encode(cancelled))
    for i in range(400):  # long enough to be deflated: judged by its length before
        replica.add(f"element-{i}")
    assert encode_decodable(replica) == encode(replica)
    assert_same_replica(decode(encode(replica)), replica)


# -- values ---------------------------------------------------------------------

EDGE_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    INT64_MIN,
    INT64_MAX,
    2**32,
    0.0,
    -0.0,
    5e-324,
    -1.7976931348623157e308,
    0.1,
    "",
    "ünïcødé ✓ 漢字 🎉\u200d",
    "\x00\n\t",
    b"",
    b"\x00\xff" * 3,
    [],
    (),
    {},
    [1, [2, [3, (4.5, None)]]],
    (True, b"x", "y"),
    {"a": [1, {"b": None, "c": -0.0}], "": ()},
]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _frozen(value: Any) -> Any:
    """How a replica stores a value: lists as tuples, dicts as read-only maps."""
    if type(value) in (list, tuple):
        return tuple(_frozen(v) for v in value)
    if type(value) is dict:
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _value_round_trips(value: Any) -> None:
    expected = canon(_frozen(value))
    register = LWWRegister("a")
    register.set(value)
    decoded = decode(encode(register))
    assert canon(decoded.value) == expected
    mv = MVRegister("a")
    mv.set(value)
    assert canon(decode(encode(mv)).value) == "(" + expected + ")"
    lww_map = LWWMap("a")
    lww_map.set("k", value)
    assert canon(decode(encode(lww_map))["k"]) == expected
    ormap = ORMap("a")
    ormap.update("r", MVRegister, lambda r: r.set(value))
    assert canon(decode(encode(ormap))["r"].value) == "(" + expected + ")"


@pytest.mark.parametrize("value", [*EDGE_VALUES, _nested(32)], ids=repr)
def test_edge_values_round_trip_exactly(value: Any) -> None:
    _value_round_trips(value)


@given(values)
def test_every_value_round_trips_exactly(value: Any) -> None:
    _value_round_trips(value)


@given(keys)
def test_every_key_round_trips_exactly(key: Any) -> None:
    expected = canon(_frozen(key))
    for kind in (GSet, ORSet):
        replica = kind("a")
        replica.add(key)
        (element,) = decode(encode(replica))
        assert canon(element) == expected
    lww_map = LWWMap("a")
    lww_map.set(key, 1)
    (map_key,) = decode(encode(lww_map)).keys()
    assert canon(map_key) == expected
    ormap = ORMap("a")
    ormap.update(key, GCounter, lambda c: c.increment())
    (or_key,) = decode(encode(ormap)).keys()
    assert canon(or_key) == expected


def test_values_come_back_frozen() -> None:
    register = LWWRegister("a")
    register.set({"list": [1, 2], "dict": {"x": [3]}})
    value = decode(encode(register)).value
    assert type(value) is MappingProxyType
    assert type(value["list"]) is tuple
    assert type(value["dict"]) is MappingProxyType
    assert type(value["dict"]["x"]) is tuple
    assert value == register.value


# -- nesting --------------------------------------------------------------------


def _deep_map(depth: int, leaf: Any = "v") -> ORMap:
    """``depth`` ORMaps nested in one another; the innermost holds a register."""
    top = ORMap("a", clock=FakeWall())

    def writer(level: int) -> Any:
        if level == depth:
            return lambda m: m.update(f"k{level}", LWWRegister, lambda r: r.set(leaf))
        inner = writer(level + 1)
        return lambda m: m.update(f"k{level}", ORMap, inner)

    writer(1)(top)
    return top


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 32])
def test_nested_ormaps_round_trip(depth: int) -> None:
    top = _deep_map(depth, leaf=[depth, "x"])
    decoded = decode(encode(top))
    assert_same_replica(decoded, top)
    node: Any = decoded
    for level in range(1, depth + 1):
        node = node[f"k{level}"]
        assert type(node) is (ORMap if level < depth else LWWRegister)
    assert canon(node.value) == canon((depth, "x"))


@settings(max_examples=40)
@given(scenarios(ORMap, max_steps=25))
def test_nested_ormap_scenarios_round_trip(scenario: Any) -> None:
    for replica in scenario.replicas:
        assert_same_replica(decode(encode(replica)), replica)
    for delta in scenario.deltas:
        assert_same_delta(decode(encode(delta)), delta, scenario.replicas)


def test_concurrent_types_under_one_key_round_trip() -> None:
    left = ORMap("a", clock=FakeWall())
    right = ORMap("b", clock=FakeWall())
    left.update("k", GCounter, lambda c: c.increment(3))
    right.update("k", LWWRegister, lambda r: r.set("x"))
    left.merge(right)
    decoded = decode(encode(left))
    assert_same_replica(decoded, left)
    assert type(decoded["k"]) is GCounter  # GCounter comes first in CRDT_TYPES
    decoded.update("k", LWWRegister, lambda r: r.set("y"))  # both types are still there


# -- clocks -------------------------------------------------------------------------


def test_decoded_register_clock_observed_the_state() -> None:
    register = LWWRegister("a", clock=FakeWall(BASE_NS))
    register.set("old")
    decoded = decode(encode(register))
    assert decoded.clock.last >= BASE_NS
    delta = decoded.set("new")
    assert decoded.value == "new"
    register.merge(delta)  # the original replica agrees the new write wins
    assert register.value == "new"


def test_decoded_lwwmap_clock_observed_the_state() -> None:
    wall = FakeWall(BASE_NS)
    lww_map = LWWMap("a", clock=wall)
    lww_map.set("k", "old")
    wall.now += 10**9
    lww_map.set("j", "old")
    lww_map.remove("j")
    decoded = decode(encode(lww_map))
    decoded.set("k", "new")
    decoded.set("j", "back")
    assert decoded.value == {"k": "new", "j": "back"}


def test_decoded_ormap_shares_one_clock_that_observed_the_state() -> None:
    top = ORMap("a", clock=FakeWall(BASE_NS))
    top.update("m", ORMap, lambda m: m.update("r", LWWRegister, lambda r: r.set("old")))
    decoded = decode(encode(top))
    decoded.update("m", ORMap, lambda m: m.update("r", LWWRegister, lambda r: r.set("new")))
    assert decoded.value == {"m": {"r": "new"}}
    assert decoded["m"]["r"].clock is decoded.clock


@pytest.mark.parametrize("kind", [LWWRegister, LWWMap, ORMap], ids=lambda k: k.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_decoded_clocked_replicas_win_new_writes(kind: type[CRDT], data: st.DataObject) -> None:
    scenario = data.draw(scenarios(kind))
    for replica in scenario.replicas:
        decoded: Any = decode(encode(replica))
        if kind is LWWRegister:
            decoded.set("winner")
            assert decoded.value == "winner"
        elif kind is LWWMap:
            for key in [*replica.keys(), "fresh"]:
                decoded.set(key, "winner")
                assert decoded[key] == "winner"
        else:
            for key in [*replica.keys(), "fresh"]:
                if key in decoded and type(decoded[key]) is not LWWRegister:
                    continue
                decoded.update(key, LWWRegister, lambda r: r.set("winner"))
                assert decoded[key].value == "winner"


# -- the format -----------------------------------------------------------------


@KINDS
def test_format_is_versioned(kind: type[CRDT]) -> None:
    replica = make(kind, "a")
    raw = msgpack.unpackb(encode(replica), raw=False)
    assert type(raw) is list
    assert raw[0] == FORMAT_VERSION == 1
    assert raw[1] == kind.TAG
    assert len(raw) == 6


@pytest.mark.parametrize("version", [0, 2, 255, -1, "1", 1.0, True, None, [1]], ids=repr)
def test_unknown_format_version_is_refused(version: Any) -> None:
    counter = GCounter("a")
    counter.increment()
    raw = unpack(encode(counter))
    raw[0] = version
    with pytest.raises(DecodeError):
        decode(pack(raw))


@pytest.mark.parametrize("version", [0, 2, -1, "1", None], ids=repr)
def test_unknown_format_version_of_a_deflated_envelope_is_refused(version: Any) -> None:
    replica = ORSet("a")
    for i in range(300):
        replica.add(f"e{i}")
    raw = msgpack.unpackb(encode(replica), raw=False, use_list=True)
    assert raw[:2] == [1, "z"]
    raw[0] = version
    with pytest.raises(DecodeError):
        decode(pack(raw))


def test_decode_takes_any_bytes_like() -> None:
    counter = PNCounter("a")
    counter.decrement(5)
    data = encode(counter)
    assert decode(bytearray(data)) == counter
    assert decode(memoryview(data)) == counter
    assert decode(memoryview(b"xx" + data)[2:]) == counter


def test_decoded_replica_is_independent_of_the_input() -> None:
    source = ORSet("a")
    source.add("x")
    data = bytearray(encode(source))
    decoded = decode(data)
    data[:] = b"\x00" * len(data)
    assert decoded == source
    decoded.add("y")
    assert "y" not in source


def test_decoded_replica_keeps_working() -> None:
    wall = FakeWall(BASE_NS)
    left = ORMap("a", clock=wall)
    left.update("n", GCounter, lambda c: c.increment(2))
    right = decode(encode(left))
    right_clocked = ORMap("b", clock=HybridLogicalClock(wall))
    right_clocked.merge(right)
    delta = right_clocked.update("n", GCounter, lambda c: c.increment(5))
    left.merge(delta)
    assert left.value == {"n": 7}
    decoded_delta = decode(encode(delta))
    fresh = ORMap("c", clock=wall)
    fresh.merge(decoded_delta)
    assert fresh.value == {"n": 5}


# -- decode(data, expected) and context forms ------------------------------------------


@KINDS
def test_decode_checks_the_expected_type(kind: type[CRDT]) -> None:
    replica = make(kind, "a")
    data = encode(replica)
    decoded = decode(data, kind)
    assert type(decoded) is kind
    assert decoded == replica
    for other in CRDT_TYPES:
        if other is not kind:
            with pytest.raises(DecodeError, match=other.__name__):
                decode(data, other)


def test_decode_checks_the_expected_type_of_deltas_and_deflated_states() -> None:
    replica = ORSet("a")
    delta = replica.add("x")
    assert decode(encode(delta), ORSet).is_delta
    with pytest.raises(DecodeError):
        decode(encode(delta), GSet)
    for i in range(300):
        replica.add(f"e{i}")
    data = encode(replica)
    assert msgpack.unpackb(data)[1] == "z"
    assert decode(data, ORSet) == replica
    with pytest.raises(DecodeError):
        decode(data, ORMap)


@pytest.mark.parametrize(
    "vector, cloud, expected",
    [
        ([], [0, 5, 2, 0, 1, 4, 0, 10, 1], ({"a": 6}, [("a", 10)])),
        ([0, 3], [0, 10, 2, 0, 4, 3, 0, 7, 3], ({"a": 11}, [])),
        ([0, 3], [0, 10, 2, 0, 4, 3, 0, 7, 2], ({"a": 8}, [("a", 10), ("a", 11)])),
        ([0, 3], [0, 1, 2, 0, 3, 1], ({"a": 3}, [])),
        ([], [0, 5, 3, 0, 6, 3, 1, 2, 1], ({}, [("a", n) for n in range(5, 9)] + [("b", 2)])),
        ([1, 2], [1, 4, 1, 0, 1, 1], ({"a": 1, "b": 2}, [("b", 4)])),
    ],
)
def test_any_context_form_decodes_compact(
    vector: list[int], cloud: list[int], expected: tuple[dict[str, int], list[Any]]
) -> None:
    data = pack([1, "ef", 0, ["a", "b"], [vector, cloud], [[], []]])
    decoded = decode(data)
    assert decoded.context == CausalContext(*expected)
    assert decoded.context.version_vector == expected[0]
