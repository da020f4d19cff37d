"""LangGraph's long-term memory store (``BaseStore``) on a Node: shared memory, no database.

Graphs on different machines, each with a Node in the same mesh and an
``AgentsyncStore`` on it, read and write one set of items. The store is one
top-level ``LWWMap`` (``name``, ``"langgraph"`` by default) keyed by
``(namespace, key)``; each value is a record of the item's value and its
creation and update times in ns. So:

- **Last writer wins per item.** Concurrent puts of the same item keep the
  one with the later hybrid-logical-clock timestamp (then replica id) on
  every node; the other is lost whole, its fields are not merged. Puts to
  different items never conflict.
- **A delete is a timestamped removal**: a put after it wins, and it wins
  over a put before it. Deleting an item this node has not seen writes
  nothing, so it cannot remove a concurrent put made elsewhere.
- **Reads are local**: another node's put shows once gossip brings it
  (about one round trip with the eager push).
- ``created_at`` is kept from the item this node held when it updated it;
  ``updated_at`` is the writer's wall clock.

Not supported, and refused with NotImplementedError: TTLs (nothing expires)
and ``index=`` fields (there is no vector index). A search's natural-language
``query`` cannot be ranked without one: the matching items come back
unranked (``score`` None), as from ``InMemoryStore`` without an index, and
the first such search logs a warning. See ``docs/guides/langgraph.md``.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, TypeGuard

from agentsync.crdt.values import Value, freeze
from agentsync.node import Node

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        InvalidNamespaceError,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        validate_op_namespace,
    )
except ImportError as exc:  # pragma: no cover  # the dev extra installs it
    raise ImportError(
        "agentsync.adapters.langgraph needs LangGraph: pip install 'agentsync[langgraph]'"
    ) from exc

log = logging.getLogger("agentsync.adapters.langgraph")

DEFAULT_NAME = "langgraph"
"""The top-level name that holds the store's items."""

_ORDERED: dict[str, Callable[[float, float], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}

Record = tuple[tuple[str, ...], str, Mapping[str, Any]]
"""An item as stored: namespace, key, and the record (value, created, updated)."""


class AgentsyncStore(BaseStore):
    """A LangGraph ``BaseStore`` whose items live in ``node`` under the top-level ``name``."""

    __slots__ = ("_items", "_node", "_warned")

    supports_ttl = False

    def __init__(self, node: Node, name: str = DEFAULT_NAME) -> None:
        self._node = node
        self._items = node.lwwmap(name)  # TypeError if the name holds another type
        self._warned = False

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: every op is checked first, reads see the state before the
        batch's puts (as in LangGraph's own stores), and the puts, the last per
        item, apply as one Node batch (one commit, one push)."""
        ops = list(ops)
        puts = {(tuple(op.namespace), op.key): _record(op) for op in ops if _checked(op)}
        results = [self._run(op) for op in ops]
        with self._node.batch():
            for (namespace, key), record in puts.items():
                self._apply(namespace, key, record)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch``, on the caller's loop: the work is local and in memory (with
        a ``data_dir``, each put waits for its commit, as a handle write does)."""
        return self.batch(ops)

    # -- reads ----------------------------------------------------------------

    def _run(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            raw = self._items.get((tuple(op.namespace), op.key))
            found = _parse((tuple(op.namespace), op.key), raw)
            return None if found is None else _item(Item, found)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return _list_namespaces(op, {namespace for namespace, _, _ in self._records()})
        return None  # a PutOp: applied after the reads

    def _records(self) -> list[Record]:
        """Every item held here; entries of another shape (a foreign writer) are skipped."""
        return [
            found for key, raw in self._items.items() if (found := _parse(key, raw)) is not None
        ]

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.query and not self._warned:
            self._warned = True
            log.warning("AgentsyncStore has no vector index: search(query=...) returns "
                        "the matching items unranked, newest first")  # fmt: skip
        prefix = tuple(op.namespace_prefix)
        found = [
            (namespace, key, record)
            for namespace, key, record in self._records()
            if namespace[: len(prefix)] == prefix
            and all(_matches(record["value"].get(k), v) for k, v in (op.filter or {}).items())
        ]
        found.sort(key=lambda r: (-r[2]["updated"], r[0], r[1]))  # newest first, then stable
        return [_item(SearchItem, r) for r in found[op.offset : op.offset + op.limit]]

    # -- writes ---------------------------------------------------------------

    def _apply(self, namespace: tuple[str, ...], key: str, record: Value) -> None:
        held = _parse((namespace, key), self._items.get((namespace, key)))
        if record is None:
            if held is not None:
                del self._items[(namespace, key)]
            return
        if held is not None:  # the map's write freezes it: no second walk here
            record = {**record, "created": held[2]["created"]}
        self._items[(namespace, key)] = record


def _checked(op: Op) -> TypeGuard[PutOp]:
    """Refuse a malformed op before anything is written; True for a PutOp."""
    if not isinstance(op, (GetOp, SearchOp, ListNamespacesOp, PutOp)):
        raise ValueError(f"unknown operation type: {type(op).__name__}")
    validate_op_namespace(op)
    if isinstance(op, (GetOp, PutOp)) and type(op.key) is not str:
        raise TypeError(f"a key must be a str, not {type(op.key).__name__}")
    if not isinstance(op, PutOp):
        return False
    if not op.namespace or op.namespace[0] == "langgraph":
        raise InvalidNamespaceError(
            f"a put needs a namespace not empty and not under 'langgraph', not {op.namespace}"
        )
    if op.ttl is not None:
        raise NotImplementedError("AgentsyncStore does not support TTLs: items never expire")
    if op.index not in (None, False):
        raise NotImplementedError("AgentsyncStore has no vector index: give index=None or False")
    value: object = op.value  # typed Mapping | None, but a caller may pass anything
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"a put's value must be a dict (None deletes), not {type(value).__name__}")
    return True


def _record(op: PutOp) -> Value:
    """The frozen record a put writes, checked (TypeError, ValueError) before any write."""
    if op.value is None:
        return None
    now = time.time_ns()
    return freeze({"value": dict(op.value), "created": now, "updated": now})


def _parse(key: Hashable, raw: Value) -> Record | None:
    """The namespace, key and record of a stored entry, or None if absent or foreign."""
    if not (isinstance(key, tuple) and len(key) == 2 and isinstance(raw, Mapping)):
        return None
    namespace, name = key
    if not (isinstance(namespace, tuple) and all(type(label) is str for label in namespace)):
        return None
    if type(name) is not str or not isinstance(raw.get("value"), Mapping):
        return None
    if type(raw.get("created")) is not int or type(raw.get("updated")) is not int:
        return None
    return namespace, name, raw


def _item(kind: type[Item], found: Record) -> Any:
    namespace, key, record = found
    return kind(
        namespace=namespace,
        key=key,
        value=_thaw(record["value"]),
        created_at=_datetime(record["created"]),
        updated_at=_datetime(record["updated"]),
    )


def _thaw(value: Value) -> Any:
    """A stored value as the caller wrote it in JSON terms: dicts and lists again."""
    if isinstance(value, MappingProxyType):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _datetime(ns: int) -> datetime:
    """A UTC datetime from ns since the epoch, exact to the microsecond."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc) + timedelta(microseconds=rest // 1000)


def _matches(value: Any, wanted: Any) -> bool:
    """LangGraph's filter on a stored (frozen) value: equality, nested dicts, lists
    element by element, and ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``.
    An ordering against a missing or non-numeric field does not match
    (InMemoryStore raises there)."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_compare(value, op, arg) for op, arg in wanted.items())
        return isinstance(value, Mapping) and all(
            _matches(value.get(k), v) for k, v in wanted.items()
        )
    if isinstance(wanted, (list, tuple)):
        return (
            isinstance(value, tuple)  # stored lists are tuples
            and len(value) == len(wanted)
            and all(map(_matches, value, wanted))
        )
    return bool(value == wanted)


def _compare(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if op not in _ORDERED:
        raise ValueError(f"unsupported filter operator {op!r}: use $eq, $ne, $gt, $gte, $lt, $lte")
    try:
        return _ORDERED[op](float(value), float(arg))
    except (TypeError, ValueError):
        return False


def _list_namespaces(
    op: ListNamespacesOp, namespaces: set[tuple[str, ...]]
) -> list[tuple[str, ...]]:
    """The namespaces matching every condition, cut to ``max_depth``, sorted, then paged."""
    kept = {
        namespace[: op.max_depth] if op.max_depth is not None else namespace
        for namespace in namespaces
        if all(_namespace_matches(condition, namespace) for condition in op.match_conditions or ())
    }
    return sorted(kept)[op.offset : op.offset + op.limit]


def _namespace_matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """A prefix or suffix condition, ``"*"`` matching any one label."""
    path = condition.path
    if len(namespace) < len(path):
        return False
    if condition.match_type == "suffix":
        namespace, path = namespace[::-1], path[::-1]
    elif condition.match_type != "prefix":
        raise ValueError(f"unsupported match type {condition.match_type!r}")
    return all(want in ("*", label) for label, want in zip(namespace, path, strict=False))


__all__ = ["DEFAULT_NAME", "AgentsyncStore"]
