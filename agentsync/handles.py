"""Live handles on a Node's replicas: what ``node.counter(name)`` and friends return.

A handle is a path from the top-level name down through nested maps, plus
the type at its end. It holds no state: every read looks the replica up, and
every write goes through the Node, which applies it at once under its lock,
buffers the delta and notifies subscribers. Handles are therefore cheap, stay
valid when remote merges replace what they point at, and are as thread-safe
as the Node.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Hashable, Iterable, Iterator
from itertools import chain
from typing import Any, Protocol, TypeVar

from agentsync.crdt import (
    CRDT,
    EWFlag,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
)
from agentsync.crdt.group import WriteInPlace
from agentsync.crdt.lwwmap import Items, pairs_of
from agentsync.crdt.values import Value

Path = tuple[tuple[Hashable, type[CRDT]], ...]
"""(key, type) from the top-level name down; every step but the last is an ORMap."""


class Owner(Protocol):
    """What a handle needs from the Node that made it.

    ``_write`` applies ``fn`` (a mutator returning its delta); where the write
    has one, ``in_place(replica, arg)`` is the same write without a delta,
    which an owner may take instead (the Node does, ``SyncEngine.step_local``)
    or ignore.
    """

    def _read(self, path: Path) -> Any: ...

    def _write(
        self,
        path: Path,
        fn: Callable[[Any], Any],
        in_place: WriteInPlace | None = None,
        arg: Any = None,
    ) -> None: ...

    def _check(self, path: Path) -> None: ...


class Handle:
    """A live view of one replica in a Node; subclasses add the type's operations."""

    __slots__ = ("_owner", "_path")

    KIND: type[CRDT]
    EMPTY: Any = None
    """The value of a replica that was never written."""

    def __init__(self, owner: Owner, path: Path) -> None:
        self._owner = owner
        self._path = path

    @property
    def name(self) -> Hashable:
        """The key of this replica in its parent (the top-level name at the top)."""
        return self._path[-1][0]

    @property
    def value(self) -> Any:
        """The replica's current value (the type's empty value before any write)."""
        replica = self._owner._read(self._path)
        return self.EMPTY if replica is None else replica.value

    def __repr__(self) -> str:
        keys = "/".join(repr(key) for key, _ in self._path)
        return f"<{type(self).__name__} {keys}: {self.value!r}>"


class _Collection(Handle):
    """A handle on a replica that holds elements or keys: ``in`` and ``len``."""

    __slots__ = ()

    def __contains__(self, element: object) -> bool:
        replica = self._owner._read(self._path)
        return replica is not None and element in replica

    def __len__(self) -> int:
        replica = self._owner._read(self._path)
        return 0 if replica is None else len(replica)


class _Keyed(_Collection):
    """A handle on a map: iterating and ``keys()`` give the present keys."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.keys())

    def keys(self) -> builtins.list[Hashable]:
        """The present keys."""
        replica = self._owner._read(self._path)
        return [] if replica is None else replica.keys()


class CounterHandle(Handle):
    """A PNCounter: ``increment``, ``decrement``, ``value``."""

    __slots__ = ()
    KIND = PNCounter
    EMPTY = 0

    def increment(self, n: int = 1) -> None:
        """Add ``n`` (an int >= 0)."""
        self._owner._write(self._path, lambda c: c.increment(n), PNCounter._step_in_place, (n, 1))

    def decrement(self, n: int = 1) -> None:
        """Subtract ``n`` (an int >= 0)."""
        self._owner._write(self._path, lambda c: c.decrement(n), PNCounter._step_in_place, (n, -1))


class SetHandle(_Collection):
    """An add-wins ORSet: ``add``, ``update``, ``remove``, ``discard``, ``clear``, and set
    reads."""

    __slots__ = ()
    KIND = ORSet
    EMPTY: frozenset[Hashable] = frozenset()

    def add(self, element: object) -> None:
        """Add ``element`` (a concurrent remove loses)."""
        self._owner._write(self._path, lambda s: s.add(element), ORSet._add_in_place, element)

    def update(self, elements: Iterable[object]) -> None:
        """Add every element of ``elements`` in one write (peers get all or none of it).

        Like ``set.update``, but a str or bytes is refused rather than split
        into characters. Much cheaper than ``add`` per element for many.
        """
        self._owner._write(self._path, lambda s: s.add_all(elements))

    def remove(self, element: object) -> None:
        """Remove ``element``; KeyError if it is absent here."""
        self._owner._write(self._path, lambda s: s.remove(element))

    def discard(self, element: object) -> None:
        """Remove ``element`` if present."""
        self._owner._write(self._path, lambda s: s.discard(element))

    def clear(self) -> None:
        """Remove every element seen here."""
        self._owner._write(self._path, lambda s: s.clear())

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.value)


class RegisterHandle(Handle):
    """A last-writer-wins register (HLC timestamps): ``set`` and ``value``."""

    __slots__ = ()
    KIND = LWWRegister

    def set(self, value: object) -> None:
        """Write ``value``; the latest write (by HLC, then replica id) wins."""
        self._owner._write(self._path, lambda r: r.set(value), LWWRegister._set_in_place, value)


class MVRegisterHandle(Handle):
    """A multi-value register: ``value`` is a tuple of the concurrent writes."""

    __slots__ = ()
    KIND = MVRegister
    EMPTY: tuple[Value, ...] = ()

    def set(self, value: object) -> None:
        """Write ``value``, superseding every value seen here."""
        self._owner._write(self._path, lambda r: r.set(value), MVRegister._set_in_place, value)


class FlagHandle(Handle):
    """An enable-wins flag: ``enable``, ``disable``, ``value``."""

    __slots__ = ()
    KIND = EWFlag
    EMPTY = False

    def enable(self) -> None:
        """Turn the flag on (a concurrent disable loses)."""
        self._owner._write(self._path, lambda f: f.enable(), EWFlag._enable_in_place)

    def disable(self) -> None:
        """Turn the flag off (the enables seen here)."""
        self._owner._write(self._path, lambda f: f.disable())


class LWWMapHandle(_Keyed):
    """A map of plain values, last writer wins per key; reads like a dict."""

    __slots__ = ()
    KIND = LWWMap

    @property
    def value(self) -> dict[Hashable, Value]:
        """A dict of every present key and its value."""
        replica = self._owner._read(self._path)
        return {} if replica is None else dict(replica.value)

    def __setitem__(self, key: object, value: object) -> None:
        self._owner._write(self._path, lambda m: m.set(key, value))

    def __delitem__(self, key: object) -> None:
        self._owner._write(self._path, lambda m: m.remove(key))

    def update(self, items: Items = (), /, **kwargs: object) -> None:
        """Write the pairs of ``items`` (a mapping or pairs), then ``kwargs``, in one write.

        Like ``dict.update``, but peers get all of it or none, and a bad key
        or value raises with nothing written. Much cheaper than ``m[k] = v``
        per key for many.
        """
        if kwargs:
            items = chain(pairs_of(items), kwargs.items())
        self._owner._write(self._path, lambda m: m.set_all(items))

    def __getitem__(self, key: Hashable) -> Value:
        replica = self._owner._read(self._path)
        if replica is None:
            raise KeyError(key)
        return replica[key]

    def get(self, key: Hashable, default: Value = None) -> Value:
        """The value under ``key``, or ``default``."""
        replica = self._owner._read(self._path)
        return default if replica is None else replica.get(key, default)

    def items(self) -> builtins.list[tuple[Hashable, Value]]:
        """The present (key, value) pairs."""
        replica = self._owner._read(self._path)
        return [] if replica is None else replica.items()


class Container:
    """The accessors shared by a Node (top-level names) and a map handle (keys)."""

    __slots__ = ()

    def _child(self, key: object, handle: type[H]) -> H:
        raise NotImplementedError

    def counter(self, key: Any) -> CounterHandle:
        """The PNCounter under ``key`` (created on first write)."""
        return self._child(key, CounterHandle)

    def set(self, key: Any) -> SetHandle:
        """The add-wins ORSet under ``key``."""
        return self._child(key, SetHandle)

    def register(self, key: Any) -> RegisterHandle:
        """The last-writer-wins register under ``key``."""
        return self._child(key, RegisterHandle)

    def mvregister(self, key: Any) -> MVRegisterHandle:
        """The multi-value register under ``key``."""
        return self._child(key, MVRegisterHandle)

    def flag(self, key: Any) -> FlagHandle:
        """The enable-wins flag under ``key``."""
        return self._child(key, FlagHandle)

    def lwwmap(self, key: Any) -> LWWMapHandle:
        """The last-writer-wins map under ``key``."""
        return self._child(key, LWWMapHandle)

    def map(self, key: Any) -> MapHandle:
        """The ORMap (update-wins, nesting any type) under ``key``."""
        return self._child(key, MapHandle)


H = TypeVar("H", bound=Handle)


class MapHandle(_Keyed, Container):
    """An ORMap: nested handles through the same accessors as the Node, and ``remove``."""

    __slots__ = ()
    KIND = ORMap

    @property
    def value(self) -> dict[Hashable, Any]:
        """A dict of every present key and its nested value."""
        replica = self._owner._read(self._path)
        return {} if replica is None else replica.value

    def _child(self, key: object, handle: type[H]) -> H:
        path: Path = (*self._path, (key, handle.KIND))
        self._owner._check(path)
        return handle(self._owner, path)

    def remove(self, key: object) -> None:
        """Remove ``key`` and reset what was seen under it; KeyError if absent here."""
        self._owner._write(self._path, lambda m: m.remove(key))
