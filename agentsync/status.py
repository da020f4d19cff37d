"""What the live status page shows (``GET /v1/status``): health, lag, names and counters.

A page polls this every second, so its size is bounded whatever the state
holds: at most ``MAX_PEERS`` peers and ``MAX_NAMES`` names, each name and
value previewed in at most ``MAX_CHARS`` characters by a walk that stops
there (a set of a million elements is not sorted or copied into the
answer). Strings go out as JSON strings; the page inserts them as text,
never as HTML. Rates are left to the page: it divides the counters'
growth by the uptime's between two polls, so the node keeps no samples.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sized
from typing import Any

from agentsync.crdt import CRDT, LWWMap, ORMap
from agentsync.crdt.setbase import SetBase
from agentsync.sync import SyncEngine

MAX_PEERS = 200
"""Peers listed; ``peers_total`` says how many there are."""
MAX_NAMES = 100
"""Names listed, the first in sorted order; ``names_total`` says how many there are."""
MAX_CHARS = 200
"""The longest preview of one value, and the longest name shown, in characters."""
SORTED_UP_TO = 64
"""A set this small is shown sorted; a larger one in its own order, walked only so far."""
ELLIPSIS = "…"


def report(
    health: Mapping[str, Any],
    engine: SyncEngine,
    auth_failures: int,
    readable: Callable[[object], bool] | None = None,
) -> dict[str, Any]:
    """The status JSON: ``health`` (``Node.health``) with lag, names and the counters.

    Only the names ``readable`` accepts are shown (None: every name). Call it
    under the Node's lock: it reads the engine's state and peers.
    """
    state = engine.state
    mine = state.context.version_vector
    own = state.replica_id
    peers = [
        {**peer, "lag": lag(mine, own, _reported(engine, peer["node_id"]))}
        for peer in health["peers"][:MAX_PEERS]
    ]
    items: list[tuple[str, Any]] = [
        (name, replica)  # type: ignore[misc]  # names are str
        for name, replica in state.items()
        if readable is None or readable(name)
    ]
    names = [
        {
            "name": clip(name),
            "type": type(replica).__name__,
            "size": len(replica) if isinstance(replica, Sized) else None,
            "value": preview(replica),
        }
        for name, replica in heapq.nsmallest(MAX_NAMES, items, key=lambda item: item[0])
    ]
    m = engine.metrics
    return {
        **health,
        "peers": peers,
        "peers_total": len(health["peers"]),
        "dots": {"own": mine.get(own, 0), "all": sum(mine.values())},
        "names": names,
        "names_total": len(items),
        "metrics": {
            "rounds": m.rounds,
            "bytes_sent": m.bytes_sent,
            "bytes_received": m.bytes_received,
            "errors": m.errors,
            "auth_failures": auth_failures,
        },
    }


def _reported(engine: SyncEngine, node_id: str | None) -> Mapping[str, int] | None:
    peer = engine.peers.get(node_id) if node_id is not None else None
    return peer.vector if peer is not None else None


def lag(
    mine: Mapping[str, int], own: str, theirs: Mapping[str, int] | None
) -> dict[str, int] | None:
    """How far a peer's last reported version vector is from this node's, in dots.

    ``own``: this replica's writes the peer has not seen; ``all``: every
    dot seen here that the peer has not; ``ahead``: dots the peer has seen
    and this node has not. None before the peer reported a vector (protocol
    revision 1.2 sends it when it changed, on a busy link every 32nd message,
    so the numbers can overstate a lag for a moment, never hide one for long).
    """
    if theirs is None:
        return None
    return {
        "own": max(0, mine.get(own, 0) - theirs.get(own, 0)),
        "all": sum(max(0, n - theirs.get(replica, 0)) for replica, n in mine.items()),
        "ahead": sum(max(0, n - mine.get(replica, 0)) for replica, n in theirs.items()),
    }


def clip(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the cut marked."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def preview(value: Any, limit: int = MAX_CHARS) -> str:
    """``value`` as JSON-like text of at most ``limit`` characters, walked only that far.

    A replica is read in place, not through its ``value`` (which copies the
    whole of a set or map): call it under the lock that guards the replica.
    """
    out: list[str] = []
    budget = _write(value, out, limit + 1)
    text = "".join(out)
    return text if budget > 0 else clip(text, limit)


def _write(value: Any, out: list[str], budget: int) -> int:
    """Append ``value``'s text to ``out`` until ``budget`` characters; the budget left."""
    if budget <= 0:
        return 0
    if isinstance(value, str):
        piece = json.dumps(value[:budget], ensure_ascii=False)
    elif value is None or isinstance(value, (bool, int, float)):
        piece = json.dumps(value)
    elif isinstance(value, bytes):
        piece = f"<{len(value)} bytes>"
    elif isinstance(value, (ORMap, LWWMap)):  # shown as its value would be, nested replicas too
        return _write_all(value.iter_items(), "{}", out, budget)
    elif isinstance(value, SetBase):
        return _write_set(value.iter_elements(), out, budget)
    elif isinstance(value, CRDT):  # a counter, register or flag: its value is small
        return _write(value.value, out, budget)
    elif isinstance(value, Mapping):
        return _write_all(value.items(), "{}", out, budget)
    elif isinstance(value, frozenset):
        return _write_set(iter(value), out, budget)
    elif isinstance(value, Iterable):
        return _write_all(enumerate(value), "[]", out, budget)
    else:
        piece = repr(value)[:budget]
    out.append(piece)
    return budget - len(piece)


def _write_set(elements: Iterator[Hashable], out: list[str], budget: int) -> int:
    """Append a set's elements: sorted if it has at most ``SORTED_UP_TO``, else as they come.

    Only ``SORTED_UP_TO + 1`` elements are taken to tell, not the whole set.
    """
    head = list(itertools.islice(elements, SORTED_UP_TO + 1))
    if len(head) <= SORTED_UP_TO:
        return _write_all(enumerate(sorted(head, key=repr)), "[]", out, budget)
    return _write_all(enumerate(itertools.chain(head, elements)), "[]", out, budget)


def _write_all(pairs: Iterable[tuple[Any, Any]], brackets: str, out: list[str], budget: int) -> int:
    """Append a collection's items (with their keys for a mapping) until the budget runs out."""
    keyed = brackets == "{}"
    out.append(brackets[0])
    budget -= 1
    for i, (key, item) in enumerate(itertools.islice(pairs, budget)):
        if budget <= 0:
            return 0
        if i:
            out.append(", ")
            budget -= 2
        if keyed:
            budget = _write(key if isinstance(key, str) else repr(key), out, budget)
            out.append(": ")
            budget -= 2
        budget = _write(item, out, budget)
    out.append(brackets[1])
    return budget - 1
