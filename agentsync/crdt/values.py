"""The values replicas hold, and the limits every entry point enforces.

A value is None, bool, an int within signed 64 bits, a finite float, str,
bytes, or a list, tuple or dict (with str keys) of values. Values are *frozen*
when they are written: lists become tuples and dicts become read-only
mappings. A replica therefore never shares a mutable object with its caller,
and a value reads back exactly as it decodes from the wire (msgpack arrays
decode as tuples).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from types import MappingProxyType
from typing import Any

from agentsync.errors import IntegerRangeError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MAX_VALUE_DEPTH = 32
"""How deeply lists, tuples and dicts may nest inside one value."""

MAX_MAP_DEPTH = 32
"""How deeply ORMaps may nest inside one another."""

MAX_STR_CHARS = 4 * 1024 * 1024
"""The longest str (in characters) or bytes a value may hold."""

MAX_REPLICA_ID_CHARS = 256
"""The longest replica id."""

Value = Any
"""A frozen value (see the module docstring); ``Any`` because it is recursive."""


def check_replica_id(replica_id: object) -> str:
    """Return ``replica_id`` if it is a usable replica id, else raise."""
    if type(replica_id) is not str:
        raise TypeError(f"replica_id must be a str, not {type(replica_id).__name__}")
    if not replica_id or len(replica_id) > MAX_REPLICA_ID_CHARS:
        raise ValueError(f"replica_id must have 1 to {MAX_REPLICA_ID_CHARS} characters")
    return replica_id


def check_counter(n: object) -> int:
    """Return ``n`` if it is a valid dot counter (1 .. INT64_MAX), else raise."""
    if type(n) is not int:
        raise TypeError(f"a dot counter must be an int, not {type(n).__name__}")
    if not 1 <= n <= INT64_MAX:
        raise IntegerRangeError(f"a dot counter must lie in 1..2**63-1, not {n}")
    return n


def check_amount(n: object) -> int:
    """Validate a counter step: an int >= 0 that fits int64 (bool is refused)."""
    if type(n) is not int:
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if n > INT64_MAX:
        raise IntegerRangeError(f"n must fit in signed 64 bits, not {n}")
    return n


def freeze(value: object) -> Value:
    """Validate ``value`` and return its frozen form; raise before any change.

    TypeError for a type outside the domain, ValueError for a NaN or infinite
    float, a str that is too long or nesting that is too deep,
    IntegerRangeError for an int outside signed 64 bits.
    """
    kind = type(value)
    if kind is str or kind is bytes:  # first: the common case
        if len(value) > MAX_STR_CHARS:  # type: ignore[arg-type]
            raise ValueError(f"{kind.__name__} values may hold at most {MAX_STR_CHARS} items")
        return value
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            return value
        raise IntegerRangeError(f"ints must fit in signed 64 bits, not {value}")
    if value is None or kind is bool:
        return value
    return _freeze_nested(value, 0)


def _freeze_nested(value: object, depth: int) -> Value:
    kind = type(value)
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return value
        raise ValueError(f"floats must be finite, not {value}")
    if kind is list or kind is tuple or kind is dict or kind is MappingProxyType:
        if depth >= MAX_VALUE_DEPTH:
            raise ValueError(f"values may nest at most {MAX_VALUE_DEPTH} containers deep")
        if kind is list or kind is tuple:
            return tuple(_freeze_item(item, depth + 1) for item in value)  # type: ignore[attr-defined]
        frozen = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise TypeError(f"dict keys in values must be str, not {type(key).__name__}")
            frozen[key] = _freeze_item(item, depth + 1)
        return MappingProxyType(frozen)
    raise TypeError(
        f"unsupported value type {kind.__name__}: use None, bool, int, float, str, bytes, "
        "or lists, tuples and str-keyed dicts of these"
    )


def _freeze_item(item: object, depth: int) -> Value:
    kind = type(item)
    if kind is float or kind is list or kind is tuple or kind is dict or kind is MappingProxyType:
        return _freeze_nested(item, depth)
    return freeze(item)


def freeze_key(key: object) -> Hashable:
    """Validate a set element or map key: a frozen value that is hashable."""
    if key.__class__ is str and len(key) <= MAX_STR_CHARS:
        return key  # the hot path of every keyed write
    frozen = freeze(key)
    try:
        hash(frozen)
    except TypeError:
        raise TypeError("set elements and map keys must be hashable: dicts are not") from None
    return frozen  # type: ignore[no-any-return]


def check_many(items: object, takes: str) -> Iterable[Any]:
    """``items``, checked to be an iterable of several for a bulk write (``takes`` says
    what the write takes); TypeError for anything else, and for a str or bytes, whose
    characters are never what was meant."""
    if isinstance(items, (str, bytes, bytearray, memoryview)) or not isinstance(items, Iterable):
        raise TypeError(f"{takes}, not a {type(items).__name__}")
    return items


def stored_form(key: object) -> Hashable:
    """The form a read should look up: lists match the tuples they were stored as.

    Anything that can be no key maps to a sentinel that is never stored.
    """
    try:
        return freeze_key(key)
    except (TypeError, ValueError):
        return _NO_KEY


_NO_KEY = object()
