"""Sync messages: what two nodes say to each other, and its validated wire form.

One message type serves as both the request and the response of a push-pull
exchange. It is a msgpack array of 13 to 17 items, documented in
``docs/protocol.md``::

    [version, flags, sender, cluster, epoch, seq, ack, context, deltas, piece, want, base,
     replica, refusals, members, vector, prune]

``refusals`` and ``members`` came with revision 1.1 of protocol version 1,
``vector`` and ``prune`` (and the flag "pruned you") with revision 1.2 (all
optional trailing items), the flag "observer" with revision 1.3 (set only by
read-only nodes, which came with it), the flag "limited" with revision 1.4 (set
only towards a read-limited observer); a message of revision 1.0 has 13 items, and
decodes with ``refusals`` None and no members.
``decode_message`` checks every field and raises DecodeError, and nothing
else, on malformed input; deltas and contexts are decoded (and validated) by
the CRDT codec. Trailing items after the fifteenth are ignored, so that a
later minor revision can add fields that older nodes skip (items after the
seventeenth, since revision 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgpack

from agentsync.crdt.codec import (
    MAX_ENCODED_BYTES,
    MAX_ITEMS,
    Reader,
    Writer,
    cloud_budget,
    decode,
    encode,
)
from agentsync.crdt.dots import CausalContext
from agentsync.crdt.ormap import ORMap
from agentsync.errors import DecodeError
from agentsync.sync.pruning import Marker, decode_table, encode_table, read_count, read_name

PROTOCOL_VERSION = 1
"""The version this node speaks; a message of another version is refused."""

MAX_CLUSTER_CHARS = 128
"""The longest cluster name."""

MAX_PIECES = 1 << 16
"""The most pieces one snapshot may be cut into."""

MAX_DELTAS = 64
"""The most buffered deltas one message carries (and the most items at its top level)."""

MAX_MEMBERS = 16
"""The most peers one message may name for peer exchange."""
MAX_MEMBER_URL_CHARS = 256

_RESPONSE = 1
_REWIND = 2
_KNOWS_REPLICA = 4
_PRUNED_YOU = 8
_OBSERVER = 16
_LIMITED = 32
_FLAGS = _RESPONSE | _REWIND | _KNOWS_REPLICA | _PRUNED_YOU | _OBSERVER | _LIMITED
MAX_VECTOR = 4096
"""The most entries a reported version vector may have (revision 1.2)."""
_FIELDS = 13
"""The items of a revision 1.0 message; revision 1.1 adds ``refusals`` and ``members``."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a full-state snapshot too large for one message.

    The receiver joins the ``count`` pieces of ``transfer`` in order, decodes
    the result as one full state, and merges it in one step.
    """

    transfer: int
    """The sender's id for this snapshot (not 0)."""
    seq: int
    """The sender's buffer head when it took the snapshot: ack it once merged."""
    index: int
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """A request or response of the push-pull exchange (see ``SyncEngine``)."""

    sender: str
    """The sending node's id."""
    cluster: str
    epoch: int
    """The incarnation of the sender's delta buffer; seqs are only comparable within one."""
    seq: int
    """The sender's buffer head: the receiver acks it once it holds the sender's state to here."""
    ack: tuple[int, int] | None = None
    """``(receiver's epoch, seq)``: the sender holds the receiver's state up to that seq."""
    context: CausalContext | None = None
    """The sender's whole causal context, sent when it has no valid ack from the receiver."""
    deltas: tuple[ORMap, ...] = ()
    """A delta interval for the receiver: the buffered deltas it lacks, oldest first."""
    piece: Piece | None = None
    """A piece of a full-state snapshot for the receiver."""
    want: tuple[int, int] | None = None
    """``(transfer, index)``: the next snapshot piece the sender needs; ``(0, 0)`` asks for one."""
    is_response: bool = False
    rewind: bool = False
    """The sender refused an interval of the receiver's: ``ack`` is where to start again."""
    knows_replica: bool = False
    """The sender holds the receiver's replica id: the receiver may leave it out (revision 1.1)."""
    base: int = 0
    """The sender's seq the deltas start after: merge them only holding the sender to here."""
    replica: str | None = None
    """The replica id that issues the sender's dots: never send it deltas of only those."""
    refusals: int | None = None
    """How many intervals the sender has refused in its epoch (None: a revision 1.0 sender).

    It orders the sender's messages around each refusal: a ``rewind`` lowers
    the receiver's ack only when no message of the sender with as high a
    count came before it, so a late or duplicated rewind does not count.
    """
    members: tuple[tuple[str, str], ...] = ()
    """``(node_id, url)`` of peers the sender tells of, for peer exchange (revision 1.1).

    The engine carries them and nothing more: the Node fills them in and
    treats what it receives as untrusted hints (its membership validates,
    bounds and probes them).
    """
    vector: dict[str, int] | None = None
    """The sender's version vector, when it changed since the sender last told it (1.2).

    The receiver uses it for causal stability (``SyncEngine.stable_vector``).
    """
    prune: tuple[tuple[str, Marker], ...] | None = None
    """The sender's prune table, when it changed since the sender last told it (1.2)."""
    pruned_you: bool = False
    """The receiver's replica was pruned here: it must start a new incarnation (1.2)."""
    observer: bool = False
    """The sender is read-only: it never sends a delta, so it must never own a pruning (1.3)."""
    limited: bool = False
    """The sender sends the receiver, an observer, only some names, under its whole context (1.4).

    The receiver's state then takes writes it was never sent as seen: it
    must never pass state on, so it must never become a writer.
    """
    encoded_deltas: tuple[bytes, ...] | None = field(default=None, compare=False, repr=False)
    """The wire form of ``deltas`` when the sender already has it (its buffer does)."""


def encode_message(message: SyncMessage) -> bytes:
    """The wire form of a message."""
    context = None
    if message.context is not None:
        writer = Writer()
        packed = writer.context(message.context)
        context = [writer.replica_ids, packed]
    piece = message.piece
    trailing: list[Any] = [
        message.refusals,
        [list(member) for member in message.members] if message.members else None,
        pack_vector(message.vector) if message.vector is not None else None,
        encode_table(message.prune) if message.prune is not None else None,
    ]
    while trailing and trailing[-1] is None:
        trailing.pop()
    if trailing and trailing[0] is None:
        trailing[0] = 0  # a revision 1.2 field after no count: say none
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            PROTOCOL_VERSION,
            (_RESPONSE if message.is_response else 0)
            | (_REWIND if message.rewind else 0)
            | (_KNOWS_REPLICA if message.knows_replica else 0)
            | (_PRUNED_YOU if message.pruned_you else 0)
            | (_OBSERVER if message.observer else 0)
            | (_LIMITED if message.limited else 0),
            message.sender,
            message.cluster,
            message.epoch,
            message.seq,
            list(message.ack) if message.ack is not None else None,
            context,
            _wire_deltas(message),
            [piece.transfer, piece.seq, piece.index, piece.count, piece.data] if piece else None,
            list(message.want) if message.want is not None else None,
            message.base,
            message.replica,
            *trailing,
        ],
        use_bin_type=True,
    )


def _wire_deltas(message: SyncMessage) -> list[bytes] | None:
    if message.encoded_deltas is not None:
        return list(message.encoded_deltas) or None
    return [encode(delta) for delta in message.deltas] or None


def decode_message(data: bytes) -> SyncMessage:
    """Rebuild and validate a message; DecodeError (and nothing else) if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a message is bytes, not {type(data).__name__}")
    if len(data) > MAX_ENCODED_BYTES:
        raise DecodeError(f"a message of {len(data)} bytes exceeds {MAX_ENCODED_BYTES}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_ext_len=0,
            max_array_len=MAX_ITEMS,  # a context's arrays grow with its replicas: codec's bound
            max_map_len=0,
        )
    except Exception as exc:  # msgpack's errors vary by input; all mean malformed
        raise DecodeError(f"not valid msgpack: {exc}") from None
    if type(raw) is not tuple or not _FIELDS <= len(raw) <= MAX_DELTAS:
        _fail(f"expected an array of {_FIELDS} to {MAX_DELTAS} items")
    version, flags, sender, cluster, epoch, seq, ack, context, deltas, piece, want, base, rid = raw[
        :_FIELDS
    ]
    if type(version) is not int or version != PROTOCOL_VERSION:
        _fail(f"unsupported protocol version {version!r} (this node speaks {PROTOCOL_VERSION})")
    if type(flags) is not int or not 0 <= flags <= _FLAGS:
        _fail(f"unknown flags {flags!r}")
    refusals = read_count(raw[_FIELDS], 0, "refusals") if len(raw) > _FIELDS else None
    members = _members(raw[_FIELDS + 1]) if len(raw) > _FIELDS + 1 else ()
    vector = _vector(raw[_FIELDS + 2]) if len(raw) > _FIELDS + 2 else None
    prune = _prune(raw[_FIELDS + 3]) if len(raw) > _FIELDS + 3 else None
    return SyncMessage(
        sender=read_name(sender, "sender"),
        cluster=read_name(cluster, "cluster", MAX_CLUSTER_CHARS),
        epoch=read_count(epoch, 0, "epoch"),
        seq=read_count(seq, 0, "seq"),
        ack=_pair(ack, "ack", 0),
        context=_context(context, cloud_budget(len(data))),
        deltas=_deltas(deltas),
        piece=_piece(piece),
        want=_pair(want, "want", 0),
        is_response=bool(flags & _RESPONSE),
        rewind=bool(flags & _REWIND),
        knows_replica=bool(flags & _KNOWS_REPLICA),
        pruned_you=bool(flags & _PRUNED_YOU),
        observer=bool(flags & _OBSERVER),
        limited=bool(flags & _LIMITED),
        base=read_count(base, 0, "base"),
        replica=None if rid is None else read_name(rid, "replica"),
        refusals=refusals,
        members=members,
        vector=vector,
        prune=prune,
    )


def pack_vector(vector: dict[str, int]) -> bytes:
    """A version vector as bin: ``[ids, counters]``, decoded with limits of its own."""
    ids = sorted(vector)
    return msgpack.packb([ids, [vector[i] for i in ids]], use_bin_type=True)  # type: ignore[no-any-return]


def _vector(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if type(raw) is not bytes:
        _fail("vector must be nil or bin")
    try:
        ids, counters = msgpack.unpackb(
            raw, raw=False, use_list=False, max_ext_len=0, max_map_len=0, max_array_len=MAX_VECTOR
        )
    except Exception as exc:  # msgpack's errors vary by input; all mean malformed
        raise DecodeError(f"vector is not [ids, counters]: {exc}") from None
    if type(ids) is not tuple or type(counters) is not tuple or len(ids) != len(counters):
        _fail("vector must be [ids, counters] of one length")
    vector = {read_name(i, "a vector's replica id"): read_count(n, 1, "a vector entry")
              for i, n in zip(ids, counters, strict=True)}  # fmt: skip
    if len(vector) != len(ids):
        _fail("a vector names a replica twice")
    return vector


def _prune(raw: Any) -> tuple[tuple[str, Marker], ...] | None:
    if raw is None:
        return None
    if type(raw) is not bytes:
        _fail("prune must be nil or bin")
    return decode_table(raw)


def _members(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if type(raw) is not tuple or len(raw) > MAX_MEMBERS:
        _fail(f"members must be an array of at most {MAX_MEMBERS} [node_id, url] pairs")
    members = []
    for member in raw:
        if type(member) is not tuple or len(member) != 2:
            _fail("a member must be a [node_id, url] pair")
        node_id = read_name(member[0], "a member's node id")
        url = read_name(member[1], "a member's url", MAX_MEMBER_URL_CHARS)
        if not url.startswith(("http://", "https://")):
            _fail(f"a member's url must be http(s), not {url[:40]!r}")
        members.append((node_id, url))
    return tuple(members)


def _fail(reason: str) -> NoReturn:
    raise DecodeError(reason)


def _pair(raw: Any, what: str, low: int) -> tuple[int, int] | None:
    if raw is None:
        return None
    if type(raw) is not tuple or len(raw) != 2:
        _fail(f"{what} must be nil or a pair of ints")
    return (read_count(raw[0], low, what), read_count(raw[1], low, what))


def _context(raw: Any, budget: int) -> CausalContext | None:
    if raw is None:
        return None
    if type(raw) is not tuple or len(raw) != 2:
        _fail("context must be nil or [replica ids, context]")
    ids = raw[0]
    if ids != ():  # an empty context has no replica ids
        ids = Reader._replica_ids(ids)
    return Reader(ids, budget).context(raw[1])


def _deltas(raw: Any) -> tuple[ORMap, ...]:
    if raw is None:
        return ()
    if type(raw) is not tuple or not 0 < len(raw) <= MAX_DELTAS:
        _fail(f"deltas must be nil or an array of 1 to {MAX_DELTAS} bin")
    for item in raw:
        if type(item) is not bytes:
            _fail("each delta must be bin")
    return tuple(decode(item, ORMap) for item in raw)


def _piece(raw: Any) -> Piece | None:
    if raw is None:
        return None
    if type(raw) is not tuple or len(raw) != 5:
        _fail("piece must be nil or [transfer, seq, index, count, data]")
    transfer = read_count(raw[0], 1, "piece transfer")
    seq = read_count(raw[1], 0, "piece seq")
    count = read_count(raw[3], 1, "piece count")
    if count > MAX_PIECES:
        _fail(f"a snapshot of {count} pieces exceeds {MAX_PIECES}")
    index = read_count(raw[2], 0, "piece index")
    if index >= count:
        _fail("piece index must be below the count")
    if type(raw[4]) is not bytes or not raw[4]:
        _fail("piece data must be non-empty bin")
    return Piece(transfer, seq, index, count, raw[4])
