"""``decode`` on hostile input: DecodeError, and never any other exception.

Whatever ``decode`` accepts must be a usable replica: it reads, re-encodes to
itself and merges with honest replicas (both ways, idempotently and in either
order) without error.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import CRDT, CRDT_TYPES, GCounter, decode, encode
from agentsync.crdt.codec import (
    MAX_BLOB_BYTES,
    MAX_CLOUD_DOTS,
    MAX_ENCODED_BYTES,
    MAX_ITEMS,
)
from agentsync.crdt.values import MAX_MAP_DEPTH, MAX_REPLICA_ID_CHARS, MAX_VALUE_DEPTH
from agentsync.errors import DecodeError
from tests.crdt.codec_strategies import (
    CLOCKED,
    INT64_MAX,
    INT64_MIN,
    FakeWall,
    make,
    scenarios,
)

HONEST_IDS = ("xavier", "yolanda")
"""Honest replicas use their own ids, so their dots never collide with a forged state's."""


def pack(raw: Any) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """The raw array of an encoding, with lists, inflated if it was deflated."""
    raw = msgpack.unpackb(data, raw=False, use_list=True)
    if raw[1] == "z":
        raw = msgpack.unpackb(zlib.decompress(raw[3]), raw=False, use_list=True)
    return raw


def relaxed(replica: Any) -> Any:
    """A copy whose clock accepts any timestamp (a forged one may be far ahead)."""
    twin = replica.copy()
    if isinstance(twin, CLOCKED):
        twin.clock.max_skew_ns = 2**64
    return twin


def assert_usable(decoded: Any, honest: list[Any]) -> None:
    """An accepted state reads, round-trips and merges like an honest one."""
    assert isinstance(decoded, CRDT)
    repr(decoded)
    decoded.value  # noqa: B018  # reading must not fail
    again = decode(encode(decoded))
    assert type(again) is type(decoded)
    assert again == decoded
    assert again.is_delta == decoded.is_delta
    for replica in honest:
        if type(replica) is not type(decoded):
            continue
        ours = relaxed(replica)
        ours.merge(decoded)
        once = ours.copy()
        ours.merge(decoded)
        assert ours == once  # idempotent
        theirs = relaxed(decoded)
        theirs.merge(replica)
        assert theirs == ours  # commutative
        ours.value  # noqa: B018


def check(data: Any, honest: list[Any] = ()) -> Any:  # type: ignore[assignment]
    """Decode ``data``: DecodeError is fine; anything accepted must be usable."""
    try:
        decoded = decode(data)
    except DecodeError:
        return None
    assert_usable(decoded, list(honest))
    return decoded


# -- valid encodings to start from ------------------------------------------------

encodings = st.sampled_from(CRDT_TYPES).flatmap(
    lambda kind: scenarios(kind, max_steps=8).flatmap(
        lambda s: st.sampled_from([*s.replicas, *s.deltas]).map(encode)
    )
)


@st.composite
def honest_and_encoding(draw: st.DrawFn) -> tuple[list[Any], bytes]:
    kind = draw(st.sampled_from(CRDT_TYPES))
    forged = draw(scenarios(kind, max_steps=8))
    data = encode(draw(st.sampled_from([*forged.replicas, *forged.deltas])))
    honest = draw(scenarios(kind, max_steps=6, replica_ids=HONEST_IDS))
    return honest.replicas, data


# -- unstructured bytes -----------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_random_bytes_after_a_valid_header(tail: bytes) -> None:
    check(b"\x96\x01\xa2om\x00\x91\xa1a" + tail)


@settings(max_examples=60)
@given(encodings)
def test_every_truncation_is_refused(data: bytes) -> None:
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:end])


@settings(max_examples=300)
@given(honest_and_encoding(), st.data())
def test_byte_mutations(setup: tuple[list[Any], bytes], data: st.DataObject) -> None:
    honest, encoding = setup
    mutated = bytearray(encoding)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if op == "flip" and mutated:
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif mutated:
            del mutated[at : at + data.draw(st.integers(1, 4))]
    check(bytes(mutated), honest)


# -- structured mutations --------------------------------------------------------

JUNK_INTS = st.one_of(
    st.integers(-5, 300),
    st.sampled_from([2**31, 2**32, INT64_MAX, 2**63, 2**64 - 1, INT64_MIN, -(2**31)]),
)
junk_scalars = st.one_of(
    st.none(),
    st.booleans(),
    JUNK_INTS,
    st.floats(),
    st.text(max_size=4),
    st.sampled_from(["gc", "pn", "gs", "os", "lr", "mv", "ef", "lm", "om", "z", "a", "bob"]),
    st.binary(max_size=4),
)
junk = st.recursive(
    junk_scalars,
    lambda ch: st.one_of(
        st.lists(ch, max_size=4),
        st.dictionaries(st.text(max_size=3) | st.binary(max_size=2), ch, max_size=3),
    ),
    max_leaves=6,
)


def paths(raw: Any, at: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every node of a raw tree (lists only; dict values are left alone)."""
    found = [at]
    if type(raw) is list:
        for i, item in enumerate(raw):
            found += paths(item, (*at, i))
    return found


def node(raw: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        raw = raw[i]
    return raw


def tweak(draw: st.DrawFn, old: Any) -> Any:
    """A plausible replacement of the same type, so mutants often stay well-formed."""
    kind = type(old)
    if kind is int:
        near = st.integers(max(old - 2, INT64_MIN), min(old + 2, 2**64 - 1))  # msgpack's range
        return draw(st.integers(-1, 4) | near)
    if kind is bool:
        return not old
    if kind is str:
        return draw(st.sampled_from(["k", "x", "a", "alice", "bob", "gc", "lr", "om", "os"]))
    if kind is list and old:
        return draw(st.permutations(old)).copy()
    return draw(junk)


@st.composite
def structural_mutation(draw: st.DrawFn, raw: Any) -> Any:
    """Tweak, replace, drop, duplicate or insert nodes of a (copied) raw tree."""
    raw = msgpack.unpackb(pack(raw), raw=False, use_list=True, strict_map_key=False)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(raw)))
        op = draw(st.sampled_from(["tweak", "tweak", "tweak", "replace", "drop", "dup", "insert"]))
        if not path:
            return draw(junk)
        parent = node(raw, path[:-1])
        i = path[-1]
        if op == "tweak":
            parent[i] = tweak(draw, parent[i])
        elif op == "replace":
            parent[i] = draw(junk)
        elif op == "drop":
            del parent[i]
        elif op == "dup":
            parent.insert(i, parent[i])
        else:
            parent.insert(i, draw(junk))
    return raw


@settings(max_examples=600)
@given(honest_and_encoding(), st.data())
def test_structural_mutations(setup: tuple[list[Any], bytes], data: st.DataObject) -> None:
    honest, encoding = setup
    mutated = data.draw(structural_mutation(unpack(encoding)))
    check(pack(mutated), honest)


@settings(max_examples=150)
@given(honest_and_encoding(), st.data())
def test_structural_mutations_inside_the_deflated_envelope(
    setup: tuple[list[Any], bytes], data: st.DataObject
) -> None:
    honest, encoding = setup
    inner = pack(data.draw(structural_mutation(unpack(encoding))))
    check(pack([1, "z", len(inner), zlib.compress(inner)]), honest)


@settings(max_examples=200)
@given(honest_and_encoding())
def test_valid_encodings_are_usable_replicas(setup: tuple[list[Any], bytes]) -> None:
    honest, encoding = setup
    assert check(encoding, honest) is not None


# -- targeted malformations --------------------------------------------------------


def gc_raw() -> list[Any]:
    return [1, "gc", 0, ["a"], [[0, 1], []], [[0, 1], [1], [2]]]


def os_raw() -> list[Any]:
    return [1, "os", 0, ["a"], [[0, 2], []], [["x", "y"], [], [0, 2], [1, 1]]]


def lr_raw() -> list[Any]:
    return [1, "lr", 0, ["a"], [[0, 1], []], [[0, 1], [1], [10], ["v"]]]


def mv_raw() -> list[Any]:
    return [1, "mv", 0, ["a"], [[0, 1], []], [[0, 1], [1], ["v"]]]


def lm_raw() -> list[Any]:
    return [
        1,
        "lm",
        0,
        ["a"],
        [[0, 2], []],
        [["k", "j"], [0, 2], [1, 1], [10, 1], ["v", 1], [], []],
    ]


def om_raw() -> list[Any]:
    return [
        1,
        "om",
        0,
        ["a"],
        [[0, 2], []],
        [
            ["k", "m"],
            ["gc", "om"],
            [[[0, 1], [1], [1]], [["r"], ["lr"], [[[0, 1], [2], [10], [1]]]]],
        ],
    ]


def edit(base: Callable[[], list[Any]], *changes: tuple[tuple[int, ...], Any]) -> bytes:
    """``base()`` with the node at each path replaced, packed."""
    raw = base()
    for path, value in changes:
        node(raw, path[:-1])[path[-1]] = value
    return pack(raw)


def _value_in_register(value: Any) -> bytes:
    return edit(mv_raw, ((5, 2, 0), value))


def _deep_value(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _deep_ormap_raw(levels: int) -> bytes:
    """An ORMap state with ``levels`` ORMaps nested (the outer one included)."""
    body: Any = [["r"], ["mv"], [[[0, 1], [1], ["v"]]]]
    for _ in range(levels - 1):
        body = [["m"], ["om"], [body]]
    return pack([1, "om", 0, ["a"], [[0, 1], []], body])


def _deflated(inner: bytes, size: Any = None, tail: bytes = b"") -> bytes:
    return pack([1, "z", len(inner) if size is None else size, zlib.compress(inner) + tail])


MALFORMED: dict[str, Any] = {
    # the top-level array
    "empty input": b"",
    "nil": pack(None),
    "int": pack(1),
    "str": pack("gc"),
    "map": pack({"a": 1}),
    "empty array": pack([]),
    "5 items": pack(gc_raw()[:5]),
    "7 items": pack([*gc_raw(), 0]),
    "trailing bytes": pack(gc_raw()) + b"\x00",
    "two objects": pack(gc_raw()) * 2,
    "flags 2": edit(gc_raw, ((2,), 2)),
    "flags -1": edit(gc_raw, ((2,), -1)),
    "flags true": edit(gc_raw, ((2,), True)),
    "flags nil": edit(gc_raw, ((2,), None)),
    "flags float": edit(gc_raw, ((2,), 0.0)),
    # replica ids
    "ids empty": edit(gc_raw, ((3,), [])),
    "ids not array": edit(gc_raw, ((3,), "a")),
    "id int": edit(gc_raw, ((3,), [1])),
    "id bytes": edit(gc_raw, ((3,), [b"a"])),
    "id nil": edit(gc_raw, ((3,), [None])),
    "id empty str": edit(gc_raw, ((3,), [""])),
    "id too long": edit(gc_raw, ((3,), ["x" * (MAX_REPLICA_ID_CHARS + 1)])),
    "ids repeat": edit(gc_raw, ((3,), ["a", "a"])),
    # type tags
    "unknown tag": edit(gc_raw, ((1,), "xx")),
    "empty tag": edit(gc_raw, ((1,), "")),
    "tag z in a state": edit(gc_raw, ((1,), "z")),
    "tag nil": edit(gc_raw, ((1,), None)),
    "tag int": edit(gc_raw, ((1,), 0)),
    "tag bytes": edit(gc_raw, ((1,), b"gc")),
    "tag upper case": edit(gc_raw, ((1,), "GC")),
    "tag of another body": edit(gc_raw, ((1,), "lr")),
    # the causal context
    "context not array": edit(gc_raw, ((4,), 0)),
    "context 1 column": edit(gc_raw, ((4,), [[0, 1]])),
    "context 3 columns": edit(gc_raw, ((4,), [[0, 1], [], []])),
    "vector not array": edit(gc_raw, ((4, 0), 1)),
    "cloud not array": edit(gc_raw, ((4, 1), {"a": 1})),
    "vector odd": edit(gc_raw, ((4, 0), [0, 1, 0])),
    "cloud not triples": edit(gc_raw, ((4, 1), [0, 2])),
    "vector repeats a replica": edit(gc_raw, ((4, 0), [0, 1, 0, 2])),
    "replica index out of range": edit(gc_raw, ((4, 0), [1, 1])),
    "replica index negative": edit(gc_raw, ((4, 0), [-1, 1])),
    "replica index bool": edit(gc_raw, ((4, 0), [False, 1])),
    "replica index float": edit(gc_raw, ((4, 0), [0.0, 1])),
    "vector entry 0": edit(gc_raw, ((4, 0), [0, 0])),
    "vector entry negative": edit(gc_raw, ((4, 0), [0, -3])),
    "vector entry beyond int64": edit(gc_raw, ((4, 0), [0, 2**63])),
    "vector entry float": edit(gc_raw, ((4, 0), [0, 1.0])),
    "vector entry true": edit(gc_raw, ((4, 0), [0, True])),
    "cloud start 0": edit(gc_raw, ((4, 1), [0, 0, 1])),
    "cloud start beyond int64": edit(gc_raw, ((4, 1), [0, 2**63, 1])),
    "cloud length 0": edit(gc_raw, ((4, 1), [0, 5, 0])),
    "cloud length negative": edit(gc_raw, ((4, 1), [0, 5, -1])),
    "cloud past int64": edit(gc_raw, ((4, 1), [0, INT64_MAX, 2])),
    "cloud beyond the dot limit": edit(gc_raw, ((4, 1), [0, 3, MAX_CLOUD_DOTS + 1])),
    "clouds beyond the dot limit together": edit(
        gc_raw, ((4, 1), [0, 3, 1, 0, 10, MAX_CLOUD_DOTS])
    ),
    "cloud huge length": edit(gc_raw, ((4, 1), [0, 3, 2**62])),
    # dot columns
    "body not array": edit(gc_raw, ((5,), 7)),
    "body too short": edit(gc_raw, ((5,), [[0, 1], [1]])),
    "body too long": edit(gc_raw, ((5,), [[0, 1], [1], [2], []])),
    "runs not array": edit(gc_raw, ((5, 0), 0)),
    "counters not array": edit(gc_raw, ((5, 1), 1)),
    "runs odd": edit(gc_raw, ((5, 0), [0])),
    "run length 0": edit(gc_raw, ((5, 0), [0, 0])),
    "run length negative": edit(gc_raw, ((5, 0), [0, -1])),
    "run longer than the counters": edit(gc_raw, ((5, 0), [0, 2])),
    "run replica out of range": edit(gc_raw, ((5, 0), [3, 1])),
    "runs leave counters over": edit(gc_raw, ((5, 1), [1, 1]), ((5, 2), [2, 2])),
    "counter float": edit(gc_raw, ((5, 1), [1.0])),
    "counter str": edit(gc_raw, ((5, 1), ["1"])),
    "counter nil": edit(gc_raw, ((5, 1), [None])),
    "counter bool": edit(gc_raw, ((5, 1), [True])),
    "dot counter 0": edit(gc_raw, ((5, 1), [0])),
    "dot counter negative": edit(gc_raw, ((5, 1), [-1])),
    "dot counter beyond int64": edit(gc_raw, ((4, 0), [0, INT64_MAX]), ((5, 1), [2**63])),
    "dot counter steps below 1": edit(
        gc_raw, ((4, 0), [0, 5]), ((5, 0), [0, 2]), ((5, 1), [3, -3]), ((5, 2), [1, 1])
    ),
    "duplicate dot in a run": edit(gc_raw, ((5, 0), [0, 2]), ((5, 1), [1, 0]), ((5, 2), [1, 1])),
    "duplicate dot across runs": edit(
        gc_raw, ((5, 0), [0, 1, 0, 1]), ((5, 1), [1, 1]), ((5, 2), [1, 1])
    ),
    "dot missing from the context": edit(gc_raw, ((4, 0), [])),
    "dot beyond the vector": edit(gc_raw, ((5, 1), [2])),
    "dot missing from the cloud": edit(gc_raw, ((4, 0), []), ((4, 1), [0, 2, 3])),
    # counters
    "totals not array": edit(gc_raw, ((5, 2), 2)),
    "totals too short": edit(gc_raw, ((5, 2), [])),
    "totals too long": edit(gc_raw, ((5, 2), [2, 2])),
    "gcounter total negative": edit(gc_raw, ((5, 2), [-2])),
    "gcounter total beyond int64": edit(gc_raw, ((5, 2), [2**63])),
    "total float": edit(gc_raw, ((5, 2), [2.0])),
    "total bool": edit(gc_raw, ((5, 2), [True])),
    "total nil": edit(gc_raw, ((5, 2), [None])),
    "pncounter total beyond int64": edit(gc_raw, ((1,), "pn"), ((5, 2), [2**63])),
    "pncounter total float": edit(gc_raw, ((1,), "pn"), ((5, 2), [-2.5])),
    # sets
    "set keys not array": edit(os_raw, ((5, 0), "xy")),
    "set keys short": edit(os_raw, ((5, 0), ["x"])),
    "set keys long": edit(os_raw, ((5, 0), ["x", "y", "z"])),
    "set counts short": edit(os_raw, ((5, 1), [2])),
    "set counts not the dots": edit(os_raw, ((5, 1), [1, 2])),
    "set count negative": edit(os_raw, ((5, 1), [3, -1])),
    "set count beyond the dots": edit(os_raw, ((5, 1), [3, 0])),
    "set count float": edit(os_raw, ((5, 1), [1.0, 1.0])),
    "set counts not array": edit(os_raw, ((5, 1), {"a": 1})),
    "set key twice": edit(os_raw, ((5, 0), ["x", "x"])),
    "set key hash-equal twice": edit(os_raw, ((5, 0), [1, True])),
    "set key a map": edit(os_raw, ((5, 0), [{"a": 1}, "y"])),
    "set key holding a map": edit(os_raw, ((5, 0), [[{"a": 1}], "y"])),
    "set key nan": edit(os_raw, ((5, 0), [float("nan"), "y"])),
    "set key beyond int64": edit(os_raw, ((5, 0), [2**63, "y"])),
    "set key too deep": edit(os_raw, ((5, 0), [_deep_value(MAX_VALUE_DEPTH + 1), "y"])),
    "gset count missing dot": edit(os_raw, ((1,), "gs"), ((5, 1), [2, 1])),
    # registers
    "mv values short": edit(mv_raw, ((5, 2), [])),
    "mv values not array": edit(mv_raw, ((5, 2), "v")),
    "lr stamps short": edit(lr_raw, ((5, 2), [])),
    "lr values long": edit(lr_raw, ((5, 3), ["v", "w"])),
    "lr timestamp negative": edit(lr_raw, ((5, 2), [-1])),
    "lr timestamp beyond int64": edit(lr_raw, ((5, 2), [2**63])),
    "lr timestamp float": edit(lr_raw, ((5, 2), [10.0])),
    "lr timestamp nil": edit(lr_raw, ((5, 2), [None])),
    "ef body 3 columns": edit(mv_raw, ((1,), "ef")),
    # values
    "value nan": _value_in_register(float("nan")),
    "value inf": _value_in_register(float("inf")),
    "value -inf": _value_in_register(float("-inf")),
    "nested nan": _value_in_register([1, {"a": float("nan")}]),
    "value beyond int64": _value_in_register(2**63),
    "value max uint64": _value_in_register(2**64 - 1),
    "nested beyond int64": _value_in_register({"a": [2**63]}),
    "value too deep": _value_in_register(_deep_value(MAX_VALUE_DEPTH + 1)),
    "value map with bytes keys": _value_in_register({b"a": 1}),
    "fixext value": pack(mv_raw()).replace(b"\xa1v", b"\xd4\x01\x00"),
    "timestamp ext value": pack(mv_raw()).replace(b"\xa1v", b"\xd6\xff\x00\x00\x00\x01"),
    "map with int keys": pack(mv_raw()).replace(b"\xa1v", b"\x81\x01\x01"),
    # LWWMap
    "lm keys short": edit(lm_raw, ((5, 0), ["k"])),
    "lm stamps long": edit(lm_raw, ((5, 3), [10, 1, 1])),
    "lm values short": edit(lm_raw, ((5, 4), ["v"])),
    "lm tombstones not array": edit(lm_raw, ((5, 5), 0)),
    "lm tombstone row out of range": edit(lm_raw, ((5, 5), [2])),
    "lm tombstone row negative": edit(lm_raw, ((5, 5), [-1])),
    "lm tombstone row float": edit(lm_raw, ((5, 5), [0.0])),
    "lm markers not array": edit(lm_raw, ((5, 6), "k")),
    "lm marker also holds entries": pack(
        [
            1,
            "lm",
            1,
            ["a"],
            [[0, 2], []],
            [["k", "j"], [0, 2], [1, 1], [10, 1], ["v", 1], [], ["j"]],
        ]
    ),
    "lm marker unhashable": pack(
        [1, "lm", 1, ["a"], [[0, 2], []], [["k", "j"], [0, 2], [1, 1], [10, 1], ["v", 1], [], [{}]]]
    ),
    "lm step float": edit(lm_raw, ((5, 3), [10, 1.0])),
    "lm step nil": edit(lm_raw, ((5, 3), [None, 1])),
    "lm timestamp negative": edit(lm_raw, ((5, 3), [10, -11])),
    "lm timestamp beyond int64": edit(lm_raw, ((5, 3), [INT64_MAX, 1])),
    "lm key unhashable": edit(lm_raw, ((5, 0), [{"a": 1}, "j"])),
    "lm key nan": edit(lm_raw, ((5, 0), [float("nan"), "j"])),
    "lm value nan": edit(lm_raw, ((5, 4), [float("nan"), 1])),
    "lm body 6 columns": edit(lm_raw, ((5,), [["k"], [0, 1], [1], [1], [1], []])),
    # ORMap
    "om keys not array": edit(om_raw, ((5, 0), "k")),
    "om tags short": edit(om_raw, ((5, 1), ["gc"])),
    "om bodies short": edit(om_raw, ((5, 2), [[[0, 1], [1], [1]]])),
    "om unknown nested tag": edit(om_raw, ((5, 1), ["gc", "zz"])),
    "om nested tag nil": edit(om_raw, ((5, 1), [None, "om"])),
    "om nested tag z": edit(om_raw, ((5, 1), ["z", "om"])),
    "om same type twice under a key": edit(om_raw, ((5, 0), ["k", "k"]), ((5, 1), ["gc", "gc"])),
    "om nested body of another type": edit(om_raw, ((5, 1), ["lr", "om"])),
    "om nested body malformed": edit(om_raw, ((5, 2, 0), [[0, 1], [1]])),
    "om nested dot missing from the context": edit(om_raw, ((4, 0), [0, 1])),
    "om nested dots duplicate": edit(om_raw, ((5, 2, 1, 2, 0, 1), [1])),
    "om key unhashable": edit(om_raw, ((5, 0), [{"a": 1}, "m"])),
    "om key too deep": edit(om_raw, ((5, 0), [_deep_value(MAX_VALUE_DEPTH + 1), "m"])),
    "om nested too deep": _deep_ormap_raw(MAX_MAP_DEPTH + 1),
    "om nested far too deep": _deep_ormap_raw(300),
    # msgpack limits and hostile headers
    "msgpack nesting beyond 1024": b"\x91" * 1100 + b"\xc0",
    "msgpack nesting of maps": b"\x81\xa1a" * 1100 + b"\xc0",
    "array32 claims 2**32-1 items": b"\xdd\xff\xff\xff\xff",
    "map32 claims 2**32-1 items": b"\xdf\xff\xff\xff\xff",
    "str32 claims 4 GiB": b"\xdb\xff\xff\xff\xff",
    "bin32 claims 4 GiB": b"\xc6\xff\xff\xff\xff",
    "array beyond the item limit": b"\xdd" + (MAX_ITEMS + 1).to_bytes(4, "big") + b"\xc0" * 64,
    "map beyond the item limit": b"\xdf" + (MAX_ITEMS + 1).to_bytes(4, "big"),
    "str beyond the blob limit": b"\xdb" + (MAX_BLOB_BYTES + 1).to_bytes(4, "big") + b"a" * 64,
    "bin beyond the blob limit": b"\xc6" + (MAX_BLOB_BYTES + 1).to_bytes(4, "big") + b"a" * 64,
    "ext beyond its limit": b"\xc9\x00\x00\x00\x01\x05\x00",
    "reserved byte 0xc1": b"\xc1",
    "invalid utf-8 str": b"\xa2\xff\xfe",
    # the deflated envelope
    "deflated size not int": _deflated(pack(gc_raw()), size="31"),
    "deflated size 0": _deflated(pack(gc_raw()), size=0),
    "deflated size negative": _deflated(pack(gc_raw()), size=-1),
    "deflated size beyond the input limit": _deflated(pack(gc_raw()), size=MAX_ENCODED_BYTES + 1),
    "deflated size too small": _deflated(pack(gc_raw()), size=5),
    "deflated size too large": _deflated(pack(gc_raw()), size=1000),
    "deflated payload not bytes": pack([1, "z", 10, "x" * 10]),
    "deflated payload corrupt": pack([1, "z", 10, b"\x78\x9c" + b"\xff" * 10]),
    "deflated payload truncated": pack([1, "z", 31, zlib.compress(pack(gc_raw()))[:-5]]),
    "deflated payload raw deflate": pack([1, "z", 31, zlib.compress(pack(gc_raw()))[2:]]),
    "deflated bomb": pack([1, "z", 2048, zlib.compress(b"\x00" * (8 * 1024 * 1024))]),
    "deflated garbage inside": _deflated(b"\xc1garbage"),
    "deflated envelope inside": _deflated(_deflated(pack(gc_raw()))),
    "deflated state malformed": _deflated(pack(gc_raw()[:5])),
    "deflated envelope 5 items": pack([1, "z", 31, zlib.compress(pack(gc_raw())), 0]),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_is_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_the_targeted_cases_start_from_valid_states() -> None:
    for base in (gc_raw, os_raw, lr_raw, mv_raw, lm_raw, om_raw):
        decode(pack(base()))
    decode(_value_in_register(_deep_value(MAX_VALUE_DEPTH)))
    decode(_deep_ormap_raw(MAX_MAP_DEPTH))
    decode(_deflated(pack(gc_raw())))
    decode(pack(gc_raw()).replace(b"\x92\x00\x01\x90", b"\x90\x93\x00\x01\x01"))  # cloud form


@pytest.mark.parametrize(
    "data",
    ["", "\x91", None, 0, 1, 3.5, [], [1, "gc"], (b"x",), {b"x": 1}, object(), bytes],
    ids=lambda value: "object()" if type(value) is object else repr(value),  # no address
)
def test_non_bytes_input_is_refused(data: Any) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_input_beyond_the_size_limit_is_refused_unread() -> None:
    data = bytearray(MAX_ENCODED_BYTES + 1)
    data[:2] = b"\x96\x01"
    with pytest.raises(DecodeError, match="exceeds"):
        decode(data)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)
    with pytest.raises(ValueError, match="msgpack"):
        decode(b"\xc1")


# -- accepted oddities must still be usable replicas ------------------------------

ODD_BUT_VALID = {
    "cloud dots covered by the vector": edit(gc_raw, ((4, 1), [0, 1, 1])),
    "cloud contiguous with the vector": edit(gc_raw, ((4, 1), [0, 2, 3])),
    "entries out of dot order": edit(
        gc_raw, ((4, 0), [0, 5]), ((5, 0), [0, 2]), ((5, 1), [4, -2]), ((5, 2), [1, 2])
    ),
    "two contributions of one replica": edit(
        gc_raw, ((4, 0), [0, 5]), ((5, 0), [0, 2]), ((5, 1), [1, 1]), ((5, 2), [1, 2])
    ),
    "dots of an unknown replica": edit(
        gc_raw, ((3,), ["a", "b"]), ((4, 0), [1, 1]), ((5, 0), [1, 1])
    ),
    "a delta whose context exceeds its store": edit(gc_raw, ((2,), 1), ((4, 0), [0, 9])),
    "concurrent lww entries": edit(
        lr_raw,
        ((4, 0), [0, 2]),
        ((5, 0), [0, 2]),
        ((5, 1), [1, 1]),
        ((5, 2), [10, 10]),
        ((5, 3), ["v", "w"]),
    ),
    "lww timestamp int64 max": edit(lr_raw, ((5, 2), [INT64_MAX])),
    "om two types under a key": edit(om_raw, ((5, 0), ["k", "k"])),
}


@pytest.mark.parametrize("data", ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
def test_odd_but_valid_states_are_usable(data: bytes) -> None:
    honest = [make(kind, HONEST_IDS[0], FakeWall()) for kind in CRDT_TYPES]
    for replica in honest:
        if isinstance(replica, GCounter):
            replica.increment()
    assert check(data, honest) is not None


# -- bugs: states decode accepts but the API could never produce -----------------


def _consistent_reads(x: Any) -> None:
    elements = list(x)
    assert len(x) == len(elements)
    assert all(element in x for element in elements)
    assert len(x.value) == len(elements)


@pytest.mark.parametrize(
    "data",
    [
        pack([1, "os", 0, ["a"], [[0, 1], []], [["x", "y"], [1, 0], [0, 1], [1]]]),
        pack([1, "gs", 0, ["a"], [[0, 1], []], [["x", "y"], [0, 1], [0, 1], [1]]]),
        pack([1, "lm", 0, ["a"], [[0, 1], []], [["k"], [0, 1], [1], [5], [1], [], ["m"]]]),
        pack(
            [
                1,
                "om",
                0,
                ["a"],
                [[0, 1], []],
                [["k", "e"], ["gc", "gc"], [[[0, 1], [1], [1]], [[], [], []]]],
            ]
        ),
    ],
    ids=["ORSet", "GSet", "LWWMap", "ORMap"],
)
def test_full_states_with_markers_are_refused(data: bytes) -> None:
    try:
        decoded = decode(data)
    except DecodeError:
        return
    _consistent_reads(decoded)
    honest = relaxed(make(type(decoded), HONEST_IDS[0], FakeWall()))
    merged = relaxed(decoded)
    merged.merge(honest)
    honest.merge(decoded)
    assert merged == honest


@pytest.mark.parametrize("counts", [None, 0, False, "", b"", 0.0], ids=repr)
def test_set_counts_of_a_wrong_type_are_refused(counts: Any) -> None:
    with pytest.raises(DecodeError):
        decode(edit(os_raw, ((5, 1), counts)))


@pytest.mark.parametrize("value", ["x" * (4 * 1024 * 1024 + 1), b"x" * (4 * 1024 * 1024 + 1)])
def test_values_the_api_refuses_are_refused(value: Any) -> None:
    with pytest.raises(DecodeError):
        decode(_value_in_register(value))


def test_trailing_bytes_after_the_deflate_stream_are_refused() -> None:
    with pytest.raises(DecodeError):
        decode(_deflated(pack(gc_raw()), tail=b"junk"))


@pytest.mark.parametrize("version", [True, 1.0], ids=repr)
def test_deflated_envelope_version_must_be_the_int_1(version: Any) -> None:
    inner = pack(gc_raw())
    with pytest.raises(DecodeError):
        decode(pack([version, "z", len(inner), zlib.compress(inner)]))


def test_forged_clock_far_ahead_is_refused_by_honest_merges() -> None:
    forged = decode(edit(lr_raw, ((5, 2), [INT64_MAX - 5])))
    honest = make(type(forged), HONEST_IDS[0], FakeWall())
    before = honest.copy()
    with pytest.raises(ValueError, match="ahead"):
        honest.merge(forged)
    assert honest == before
