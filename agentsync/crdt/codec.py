"""The wire form of replicas and deltas: versioned, self-describing msgpack.

``encode(x)`` packs ``[FORMAT_VERSION, tag, is_delta, replica_ids, context,
body]``. Replica ids are hoisted into one table (index 0 is the sender) and
dots become run-length columns, so an entry costs little more than its key
and value. An encoding of ``COMPRESS_MIN_BYTES`` or more is wrapped as
``[FORMAT_VERSION, "z", size, deflated]`` when DEFLATE makes it smaller, as
Automerge deflates its columns: keys and timestamps repeat a lot.

``decode`` checks every field and the invariants of the state (each stored
dot is unique and covered by the context) and raises DecodeError, and nothing
else, on malformed input. The layout is documented in
``docs/protocol.md``.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Hashable, Iterable, Iterator
from itertools import groupby, repeat
from operator import itemgetter, sub
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

import msgpack

from agentsync.crdt.dots import CausalContext, Entry, dot_key
from agentsync.crdt.hlc import HybridLogicalClock
from agentsync.crdt.values import (
    INT64_MAX,
    MAX_REPLICA_ID_CHARS,
    MAX_STR_CHARS,
    Value,
    freeze,
    freeze_key,
)
from agentsync.errors import DecodeError

if TYPE_CHECKING:
    from agentsync.crdt.base import CRDT

C = TypeVar("C", bound="CRDT")

FORMAT_VERSION = 1

# Limits of what decode accepts. They bound the memory one decode can claim:
# msgpack can expand small inputs of empty containers 17-73x.
MAX_ENCODED_BYTES = 64 * 1024 * 1024
"""The largest input decode reads."""
MAX_ITEMS = 1 << 22
"""The most items in any one array or map (4,194,304)."""
MAX_BLOB_BYTES = 4 * MAX_STR_CHARS
"""The longest str (UTF-8 bytes) or bytes (16 MiB)."""
MAX_CLOUD_DOTS = 1 << 22
"""The most dots a decoded context's cloud may expand to."""
CLOUD_DOTS_PER_BYTE = 8
"""A cloud may expand to this many dots per input byte (but at least ``MIN_CLOUD_DOTS``).

Ranges make a cloud cheap on the wire and dear in memory; an honest cloud
holds about one dot per entry its body names, so it never comes near this.
"""
MIN_CLOUD_DOTS = 1 << 14

COMPRESS_MIN_BYTES = 1024
"""Encodings at least this long are deflated (when that makes them smaller)."""
_DEFLATED = "z"
SMALL_CLOUD = 16
"""A cloud of at most this many dots is encoded dot by dot, not run by run."""

_TYPES: dict[str, tuple[type[CRDT], int]] = {}
_TAGS: dict[object, str] = {}
"""The tag of each registered class (``tag_of``'s one lookup on the write path)."""


def register_types(*kinds: type[CRDT]) -> None:
    """Give each CRDT type its wire tag; the order is the read order of ORMap."""
    for kind in kinds:
        _TYPES[kind.TAG] = (kind, len(_TYPES))
        _TAGS[kind] = kind.TAG


def tag_of(kind: object) -> str:
    """The wire tag of a CRDT class; TypeError for anything else."""
    try:
        return _TAGS[kind]
    except (KeyError, TypeError):  # TypeError: unhashable
        names = ", ".join(k.__name__ for k, _ in _TYPES.values())
        raise TypeError(f"kind must be one of the CRDT classes ({names}), not {kind!r}") from None


def type_of(tag: str) -> tuple[type[CRDT], int]:
    """The class registered under ``tag`` and its position in read order."""
    return _TYPES[tag]


def _pack_default(obj: object) -> object:
    if type(obj) is MappingProxyType:
        return dict(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(crdt: CRDT) -> bytes:
    """The wire form of a replica or delta."""
    return _deflated(_packed(crdt))


def encode_decodable(crdt: CRDT) -> bytes | None:
    """``encode(crdt)``, or None when ``decode`` would refuse it for its size or its cloud.

    Exact where ``buffer.decodable`` is conservative: it judges the length
    decode budgets by, that of the msgpack before DEFLATE.
    """
    packed = _packed(crdt)
    if len(packed) > MAX_ENCODED_BYTES or len(crdt._ctx._cloud) > cloud_budget(len(packed)):
        return None
    return _deflated(packed)


class _Packers(threading.local):
    """One msgpack Packer per thread: making one per call was a fifth of a small encode."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True, default=_pack_default).pack


_packers = _Packers()


def _packed(crdt: CRDT) -> bytes:
    writer = Writer(crdt._rid)
    body = crdt._encode_body(writer)
    context = writer.context(crdt._ctx)
    packed: bytes = _packers.pack(
        [FORMAT_VERSION, crdt.TAG, int(crdt._delta), writer.replica_ids, context, body]
    )
    return packed


def _deflated(packed: bytes) -> bytes:
    """``packed``, wrapped deflated when it is long and DEFLATE makes it smaller."""
    if len(packed) >= COMPRESS_MIN_BYTES:
        deflated = zlib.compress(packed, 1)
        if len(deflated) < len(packed):
            return msgpack.packb(  # type: ignore[no-any-return]
                [FORMAT_VERSION, _DEFLATED, len(packed), deflated], use_bin_type=True
            )
    return packed


@overload
def decode(data: bytes) -> CRDT: ...


@overload
def decode(data: bytes, expected: type[C]) -> C: ...


def decode(data: bytes, expected: type[C] | None = None) -> CRDT:
    """Rebuild a replica or delta from ``encode``'s bytes; DecodeError if malformed.

    With ``expected`` (a CRDT class), bytes of any other type are malformed too,
    and the result is typed as that class.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"decode takes bytes, not {type(data).__name__}")
    raw = _unpack(data)
    if (
        type(raw) is tuple
        and len(raw) == 4
        and type(raw[0]) is int
        and raw[0] == FORMAT_VERSION
        and raw[1] == _DEFLATED
    ):
        data = _inflate(raw[2], raw[3])
        raw = _unpack(data)
    crdt = Reader.top(raw, cloud_budget(len(data)))
    if expected is not None and type(crdt) is not expected:
        raise DecodeError(f"expected a {expected.__name__}, got a {type(crdt).__name__}")
    return crdt


def cloud_budget(input_bytes: int) -> int:
    """How many cloud dots the decode of ``input_bytes`` bytes may expand to."""
    return min(MAX_CLOUD_DOTS, max(MIN_CLOUD_DOTS, CLOUD_DOTS_PER_BYTE * input_bytes))


def _inflate(size: Any, deflated: Any) -> bytes:
    """Undo the DEFLATE wrapper, refusing to expand beyond the declared size."""
    if type(size) is not int or not 0 < size <= MAX_ENCODED_BYTES or type(deflated) is not bytes:
        raise DecodeError("malformed deflated envelope")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(deflated, size + 1)
    except zlib.error as exc:
        raise DecodeError(f"corrupt deflated data: {exc}") from None
    if len(data) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise DecodeError("deflated data does not match its declared size")
    return data


def _unpack(data: bytes) -> Any:
    """msgpack with the safe settings and the documented limits."""
    if len(data) > MAX_ENCODED_BYTES:
        raise DecodeError(f"input of {len(data)} bytes exceeds {MAX_ENCODED_BYTES}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_ext_len=0,
            max_str_len=MAX_BLOB_BYTES,
            max_bin_len=MAX_BLOB_BYTES,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
        )
    except Exception as exc:  # msgpack's errors vary by input; all mean malformed
        raise DecodeError(f"not valid msgpack: {exc}") from None


class Writer:
    """Collects the replica-id table while the bodies are encoded."""

    __slots__ = ("_index", "replica_ids")

    def __init__(self, sender: str | None = None) -> None:
        """``sender``, if given, is the table's first id (index 0)."""
        self._index: dict[str, int] = {} if sender is None else {sender: 0}
        self.replica_ids: list[str] = [] if sender is None else [sender]

    def replica_index(self, replica_id: str) -> int:
        """The table index of ``replica_id``, adding it on first use."""
        index = self._index.get(replica_id)
        if index is None:
            index = self._index[replica_id] = len(self.replica_ids)
            self.replica_ids.append(replica_id)
        return index

    def dot_columns(self, entries: Iterable[Entry]) -> list[list[int]]:
        """``[runs, counters]`` for entries in order: runs are (replica index,
        length) pairs; counters are deltas from the previous one in the run."""
        runs: list[int] = []
        counters: list[int] = []
        for rid, run in groupby(entries, itemgetter(0)):
            more_runs, more_counters = self.run(rid, [entry[1] for entry in run])
            runs += more_runs
            counters += more_counters
        return [runs, counters]

    def run(self, replica_id: str, ns: list[int]) -> list[list[int]]:
        """``dot_columns`` of dots all of ``replica_id``, given their counters in order.

        A caller that knows its dots share one replica skips grouping them.
        """
        return [
            [self.replica_index(replica_id), len(ns)],
            [ns[0], *map(sub, ns[1:], ns)],  # each counter less the one before it
        ]

    def context(self, ctx: CausalContext) -> list[list[int]]:
        """``[vector, cloud]``: (index, n) pairs, then (index, start, length) ranges."""
        vector: list[int] = []
        for rid, n in ctx._vv.items():
            vector += (self.replica_index(rid), n)
        if len(ctx._cloud) == 1:  # one write's delta, the hot case
            ((rid, n),) = ctx._cloud
            return [vector, [self.replica_index(rid), n, 1]]
        ranges: list[int] = []
        if len(ctx._cloud) <= SMALL_CLOUD:  # a write's delta: dot by dot costs less
            last = None  # the replica of the last range
            for rid, n in sorted(ctx._cloud):
                if rid == last and ranges[-2] + ranges[-1] == n:
                    ranges[-1] += 1
                else:
                    ranges += (self.replica_index(rid), n, 1)
                    last = rid
            return [vector, ranges]
        for rid, counters in _by_replica(ctx._cloud):  # a delta group's: every dot of its writes
            index = self.replica_index(rid)
            for start, length in _runs(counters):
                if ranges and ranges[-3] == index and ranges[-2] + ranges[-1] == start:
                    ranges[-1] += length
                else:
                    ranges += (index, start, length)
        return [vector, ranges]


def _by_replica(cloud: set[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    """Each replica of a cloud in order, with its counters sorted.

    Sorting ints per replica, not the (replica, counter) tuples, is what
    makes it cheap: a tuple compares its strings first (a third of the time).
    """
    replicas = {rid for rid, _ in cloud}
    if len(replicas) == 1:  # one replica's writes, the common case
        return [(replicas.pop(), sorted([n for _, n in cloud]))]
    counters: dict[str, list[int]] = {rid: [] for rid in replicas}
    for rid, n in cloud:
        counters[rid].append(n)
    return [(rid, sorted(counters[rid])) for rid in sorted(counters)]


def _runs(counters: list[int]) -> Iterator[tuple[int, int]]:
    """``(start, length)`` of each run of consecutive ints in a sorted list without repeats.

    A run shows as first and last differing by the length less one, so a
    burst of writes (one long run) costs one comparison, not one per dot.
    """
    stack = [(0, len(counters))]
    while stack:
        lo, hi = stack.pop()
        if counters[hi - 1] - counters[lo] == hi - 1 - lo:
            yield counters[lo], hi - lo
        else:
            mid = (lo + hi) // 2
            stack += ((mid, hi), (lo, mid))  # the lower half comes out first


class Reader:
    """Validates a decoded msgpack tree and builds the replica from it."""

    __slots__ = ("cloud_budget", "replica_ids")

    def __init__(self, replica_ids: tuple[str, ...], cloud_budget: int = MAX_CLOUD_DOTS) -> None:
        self.replica_ids = replica_ids
        self.cloud_budget = cloud_budget

    @staticmethod
    def fail(reason: str) -> NoReturn:
        """Reject the input."""
        raise DecodeError(reason)

    @classmethod
    def top(cls, raw: Any, cloud_budget: int = MAX_CLOUD_DOTS) -> CRDT:
        """Decode the top-level array."""
        if type(raw) is not tuple or len(raw) != 6:
            cls.fail("expected the 6-item top-level array")
        version, tag, flags, replica_ids, raw_ctx, body = raw
        if version != FORMAT_VERSION or type(version) is not int:
            cls.fail(f"unsupported format version {version!r} (this reads {FORMAT_VERSION})")
        if type(flags) is not int or flags not in (0, 1):
            cls.fail("flags must be 0 or 1")
        reader = cls(cls._replica_ids(replica_ids), cloud_budget)
        kind = reader.kind(tag)
        ctx = reader.context(raw_ctx)
        blank = kind._blank(reader.replica_ids[0], ctx, HybridLogicalClock(), 0)
        blank._delta = bool(flags)
        kind._decode_body(reader, body, blank)
        dots = list(blank._dots())
        if len(set(dots)) != len(dots):
            cls.fail("a dot is stored twice")
        vv = ctx._vv
        cloud = ctx._cloud
        for dot in dots:
            if not (dot[1] <= vv.get(dot[0], 0) or dot in cloud):
                cls.fail(f"dot {dot} is stored but missing from the causal context")
        blank._observe_ts(blank._newest_ts(CausalContext()))
        return blank

    @classmethod
    def _replica_ids(cls, raw: Any) -> tuple[str, ...]:
        if type(raw) is not tuple or not raw:
            cls.fail("the replica id table must be a non-empty array")
        for rid in raw:
            if type(rid) is not str or not 0 < len(rid) <= MAX_REPLICA_ID_CHARS:
                cls.fail(f"invalid replica id {rid!r}")
        if len(set(raw)) != len(raw):
            cls.fail("the replica id table repeats an id")
        return raw

    def kind(self, tag: Any) -> type[CRDT]:
        """The CRDT class of a wire tag."""
        if type(tag) is not str or tag not in _TYPES:
            self.fail(f"unknown type tag {tag!r}")
        return _TYPES[tag][0]

    def columns(self, body: Any, count: int) -> tuple[Any, ...]:
        """A body array of exactly ``count`` items."""
        if type(body) is not tuple or len(body) != count:
            self.fail(f"expected a body of {count} columns")
        return body

    def list_of(self, raw: Any, length: int | None, what: str) -> tuple[Any, ...]:
        """An array, of ``length`` items when given."""
        if type(raw) is not tuple:
            self.fail(f"{what} must be an array")
        if length is not None and len(raw) != length:
            self.fail(f"{what} has {len(raw)} items, expected {length}")
        return raw

    def int_in(self, raw: Any, low: int, high: int, what: str) -> int:
        """An int (not a bool) within ``[low, high]``."""
        if type(raw) is not int or not low <= raw <= high:
            self.fail(f"{what} must be an int in [{low}, {high}], not {raw!r}")
        return raw

    def replica(self, raw: Any) -> str:
        """A replica id, from its index in the table."""
        return self.replica_ids[self.int_in(raw, 0, len(self.replica_ids) - 1, "replica index")]

    def dots(self, raw_runs: Any, raw_counters: Any) -> list[tuple[str, int]]:
        """Expand ``Writer.dot_columns`` back into dots."""
        runs = self.list_of(raw_runs, None, "dot runs")
        counters = self.list_of(raw_counters, None, "dot counters")
        if len(runs) % 2:
            self.fail("dot runs must come in (replica, length) pairs")
        dots: list[tuple[str, int]] = []
        at = 0
        for i in range(0, len(runs), 2):
            rid = self.replica(runs[i])
            length = self.int_in(runs[i + 1], 1, len(counters) - at, "run length")
            n = 0
            for step in counters[at : at + length]:
                if type(step) is not int:
                    self.fail("dot counters must be ints")
                n += step
                if not 1 <= n <= INT64_MAX:
                    self.fail(f"dot counter {n} is out of range")
                dots.append((rid, n))
            at += length
        if at != len(counters):
            self.fail("the dot runs do not cover the counters")
        return dots

    def context(self, raw: Any) -> CausalContext:
        """A causal context from ``Writer.context``'s form."""
        vector, ranges = self.columns(raw, 2)
        vector = self.list_of(vector, None, "version vector")
        ranges = self.list_of(ranges, None, "dot cloud")
        if len(vector) % 2 or len(ranges) % 3:
            self.fail("malformed causal context")
        ctx = CausalContext()
        for i in range(0, len(vector), 2):
            rid = self.replica(vector[i])
            if rid in ctx._vv:
                self.fail("the version vector repeats a replica")
            ctx._vv[rid] = self.int_in(vector[i + 1], 1, INT64_MAX, "version vector entry")
        budget = self.cloud_budget
        for i in range(0, len(ranges), 3):
            rid = self.replica(ranges[i])
            start = self.int_in(ranges[i + 1], 1, INT64_MAX, "cloud range start")
            length = self.int_in(ranges[i + 2], 1, INT64_MAX - start + 1, "cloud range length")
            budget -= length
            if budget < 0:
                self.fail(f"the dot cloud expands to more than {self.cloud_budget} dots")
            if start > ctx._vv.get(rid, 0) + 1:  # clear of the vector: add in bulk
                ctx._cloud.update(zip(repeat(rid), range(start, start + length)))
            else:
                ctx._vv[rid] = max(ctx._vv.get(rid, 0), start + length - 1)
        ctx._refold(list(ctx._vv))  # fold cloud dots the vector now reaches
        return ctx

    def sorted_entries(self, entries: list[Entry]) -> tuple[Entry, ...]:
        """Entries in the canonical (dot) order."""
        if len(entries) > 1:
            entries.sort(key=dot_key)
        return tuple(entries)

    def value(self, raw: Any) -> Value:
        """A value, checked against the domain (``values.freeze``) and frozen."""
        try:
            return freeze(raw)
        except (TypeError, ValueError) as exc:
            return self.fail(f"invalid value: {exc}")

    def key(self, raw: Any) -> Hashable:
        """A set element or map key (``values.freeze_key``)."""
        try:
            return freeze_key(raw)
        except (TypeError, ValueError) as exc:
            return self.fail(f"invalid key: {exc}")
