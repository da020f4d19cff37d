"""ORMap: keys map to nested CRDTs, all under the map's one causal context.

This is the DotMap embedding of Almeida et al. (2018, section 7.5). Every
nested replica shares the map's context, so:

- ``remove(key)`` drops exactly the dots it observed under ``key``; a nested
  value reads as its state with those dots reset;
- an update concurrent with a remove issued dots the remove did not observe,
  so the key survives with them (update-wins).

Each key holds one nested replica per type. Two replicas that concurrently
create the same key as different types both keep their values, and reads show
the type that comes first in ``CRDT_TYPES`` order; locally, asking for a key
as a type it does not hold raises TypeError.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

from agentsync.crdt.base import CRDT, Clocked
from agentsync.crdt.codec import Reader, Writer, tag_of, type_of
from agentsync.crdt.dots import CausalContext, Cut
from agentsync.crdt.hlc import HybridLogicalClock
from agentsync.crdt.values import MAX_MAP_DEPTH, freeze_key, stored_form

N = TypeVar("N", bound=CRDT)

Fields = dict[str, CRDT]
"""The nested replicas under one key, by type tag."""


class ORMap(Clocked):
    """A map of nested CRDTs with update-wins semantics and reset-remove.

    ``clock`` is a wall clock in nanoseconds, or a HybridLogicalClock; the map
    shares it with every register and LWWMap it nests.
    """

    __slots__ = ("_fields", "_hlc", "_level")

    TAG = "om"

    _fields: dict[Hashable, Fields]
    _hlc: HybridLogicalClock
    _level: int
    """How deeply this map is nested in other maps (0 at the top)."""

    def _init_store(self, hlc: HybridLogicalClock | None, depth: int) -> None:
        self._fields = {}
        self._level = depth
        if hlc is not None:
            self._hlc = hlc

    def _depth(self) -> int:
        return self._level

    # -- reads ----------------------------------------------------------------

    @staticmethod
    def _shown(fields: Fields) -> CRDT | None:
        """The nested replica that reads show for a key (first type in order)."""
        live = [nested for nested in fields.values() if not nested._is_empty()]
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        return min(live, key=lambda nested: type_of(nested.TAG)[1])

    @property
    def value(self) -> dict[Hashable, Any]:
        """A dict of every key and its nested value, converted recursively."""
        return {key: nested.value for key, nested in self.items()}

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The nested replica under ``key`` (for reading), or ``default``."""
        try:
            fields = self._fields.get(key)
        except TypeError:  # unhashable: a list, say, stored as a tuple
            fields = self._fields.get(stored_form(key))
        nested = self._shown(fields) if fields else None
        return default if nested is None else nested

    def __getitem__(self, key: Hashable) -> CRDT:
        nested = self.get(key)
        if nested is None:
            raise KeyError(key)
        return nested  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self.keys()) if self._delta else len(self._fields)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.keys())

    def keys(self) -> list[Hashable]:
        """The present keys."""
        return [key for key, _ in self.items()]

    def items(self) -> list[tuple[Hashable, CRDT]]:
        """The present keys with their nested replicas (for reading)."""
        return list(self.iter_items())

    def iter_items(self) -> Iterator[tuple[Hashable, CRDT]]:
        """``items`` one pair at a time, read in place: nothing is copied.

        For a walk that may stop early over a big map (the status page's
        preview). It reads the live store: use it up or drop it before the
        next write to the map or to a replica nested in it.
        """
        for key, fields in self._fields.items():
            nested = self._shown(fields)
            if nested is not None:
                yield key, nested

    def only(self, keep: Callable[[Hashable], bool]) -> ORMap:
        """A copy with only the keys ``keep`` accepts, under this map's *whole* causal context.

        What a peer allowed to read some names is sent. Merged, it takes the
        other keys' dots as seen, so it empties them at the receiver: sound
        only at a receiver that sends no state on (an observer).
        """
        clock = self._clock()
        part = self._blank(
            self._rid, self._ctx.copy(), clock.copy() if clock else None, self._level
        )
        part._delta = self._delta
        part._fields = {
            key: {tag: nested._twin(part._ctx, part._hlc) for tag, nested in fields.items()}
            for key, fields in self._fields.items()
            if keep(key)
        }
        return part

    # -- mutators -------------------------------------------------------------

    def update(self, key: object, kind: type[N], fn: Callable[[N], N]) -> ORMap:
        """Apply ``fn`` to the nested replica of type ``kind`` under ``key``.

        The nested replica is created empty when the key is missing. ``fn``
        must return the nested delta (join the deltas if it makes several
        writes), and the nested replica is valid only inside ``fn``. If ``fn``
        returns anything but a delta of ``kind``, TypeError is raised; the
        writes ``fn`` made stay applied locally, and reach the other replicas
        by anti-entropy rather than by this delta.
        """
        if self._delta:
            self._ensure_replica()
        frozen = freeze_key(key)
        tag = tag_of(kind)
        fields = self._fields.get(frozen)
        nested = fields.get(tag) if fields else None
        fresh = False
        if nested is None:
            held = self._shown(fields) if fields else None
            if held is not None:
                name = type(held).__name__
                raise TypeError(f"key {key!r} holds a {name}, not a {kind.__name__}")
            if kind is ORMap and self._level + 1 >= MAX_MAP_DEPTH:
                raise ValueError(f"ORMaps may nest at most {MAX_MAP_DEPTH} deep")
            nested = kind._blank(self._rid, self._ctx, self._hlc, self._level + 1)
            fresh = True
        nested_delta = fn(nested)  # type: ignore[arg-type]
        if nested._is_empty():
            if fields:
                fields.pop(tag, None)
                if not fields:
                    del self._fields[frozen]
        elif fresh:  # one already held stays where it is
            self._fields.setdefault(frozen, {})[tag] = nested
        if type(nested_delta) is not kind or not nested_delta._delta:
            # What fn wrote stays written (undoing it would mean copying the
            # nested store on every update); anti-entropy carries it on.
            what = "the replica itself" if nested_delta is nested else type(nested_delta).__name__
            raise TypeError(f"fn must return the nested {kind.__name__} delta, not {what}")
        delta = object.__new__(ORMap)  # self._part(nested_delta._ctx), inline: the hot path
        delta._rid = self._rid
        delta._ctx = nested_delta._ctx  # the nested delta's context is the map's
        delta._delta = True
        delta._fields = {frozen: {tag: nested_delta}}
        delta._level = self._level
        delta._hlc = self._hlc
        return delta

    def remove(self, key: object) -> ORMap:
        """Remove ``key``, resetting what was observed under it; KeyError if absent."""
        if self._delta:
            self._ensure_replica()
        frozen = freeze_key(key)
        fields = self._fields.get(frozen)
        if not fields:
            raise KeyError(key)
        observed = [dot for nested in fields.values() for dot in nested._dots()]
        delta = self._delta_shell([*observed, self._ctx.next_dot(self._rid)])
        delta._fields[frozen] = {tag: nested._marker(delta._ctx) for tag, nested in fields.items()}
        del self._fields[frozen]
        return delta

    # -- the store protocol ---------------------------------------------------

    def _join(
        self,
        other: Any,
        my_ctx: CausalContext,
        their_ctx: CausalContext,
        full: bool,
        keep_markers: bool,
    ) -> None:
        mine = self._fields
        theirs: dict[Hashable, Fields] = other._fields
        keys = list(mine.keys() | theirs.keys()) if full else list(theirs)
        for key in keys:
            my_fields = mine.get(key) or {}
            their_fields = theirs.get(key) or {}
            tags = my_fields.keys() | their_fields.keys() if full else their_fields.keys()
            for tag in list(tags):
                nested = my_fields.get(tag)
                incoming = their_fields.get(tag)
                if incoming is None:  # only here; their context may still reset it
                    assert nested is not None
                    incoming = type(nested)._blank(self._rid, their_ctx, None, self._level + 1)
                if nested is None:
                    nested = type(incoming)._blank(self._rid, my_ctx, self._hlc, self._level + 1)
                    nested._delta = keep_markers
                nested._join(incoming, my_ctx, their_ctx, full, keep_markers)
                if keep_markers or not nested._is_empty():
                    my_fields[tag] = nested
                else:
                    my_fields.pop(tag, None)
            if my_fields:
                mine[key] = my_fields
            else:
                mine.pop(key, None)

    @classmethod
    def _no_names(cls) -> dict[Hashable, dict[str, tuple[type[CRDT], Any]]]:
        return {}  # key -> tag -> (nested type, what the nested deltas named)

    def _name_into(
        self, names: dict[Hashable, dict[str, tuple[type[CRDT], Any]]]
    ) -> dict[Hashable, dict[str, tuple[type[CRDT], Any]]]:
        for key, fields in self._fields.items():
            by_tag = names.get(key)
            if by_tag is None:
                by_tag = names[key] = {}
            for tag, nested in fields.items():
                held = by_tag.get(tag)
                if held is None:
                    kind = type(nested)
                    by_tag[tag] = (kind, nested._name_into(kind._no_names()))
                else:
                    nested._name_into(held[1])
        return names

    def _extract(
        self, names: dict[Hashable, dict[str, tuple[type[CRDT], Any]]], ctx: CausalContext
    ) -> ORMap:
        part = self._part(ctx)
        level = self._level + 1
        for key, by_tag in names.items():
            fields = self._fields.get(key) or {}
            extracted: Fields = {}
            for tag, (kind, nested_names) in by_tag.items():
                nested = fields.get(tag)
                if nested is None:  # removed since: the part names it empty
                    nested = kind._blank(self._rid, self._ctx, self._hlc, level)
                extracted[tag] = nested._extract(nested_names, ctx)
            part._fields[key] = extracted
        return part

    def _is_empty(self) -> bool:
        if self._delta:
            return all(n._is_empty() for fields in self._fields.values() for n in fields.values())
        return not self._fields

    def _store_eq(self, other: Any) -> bool:
        mine = self._live_fields()
        theirs = other._live_fields()
        if mine.keys() != theirs.keys():
            return False
        return all(
            fields.keys() == theirs[key].keys()
            and all(n._store_eq(theirs[key][tag]) for tag, n in fields.items())
            for key, fields in mine.items()
        )

    def _live_fields(self) -> dict[Hashable, Fields]:
        live: dict[Hashable, Fields] = {}
        for key, fields in self._fields.items():
            kept = {tag: n for tag, n in fields.items() if not n._is_empty()}
            if kept:
                live[key] = kept
        return live

    def _twin(self, ctx: CausalContext, hlc: HybridLogicalClock | None) -> ORMap:
        twin = self._blank(self._rid, ctx, hlc, self._level)
        twin._delta = self._delta
        twin._fields = {
            key: {tag: nested._twin(ctx, twin._hlc) for tag, nested in fields.items()}
            for key, fields in self._fields.items()
        }
        return twin

    def _dots(self) -> Iterator[tuple[str, int]]:
        for fields in self._fields.values():
            for nested in fields.values():
                yield from nested._dots()

    def _marker(self, ctx: CausalContext) -> ORMap:
        marker = self._part(ctx)
        marker._fields = {
            key: {tag: nested._marker(ctx) for tag, nested in fields.items()}
            for key, fields in self._fields.items()
        }
        return marker

    def _drop_markers(self) -> None:
        self._delta = False  # so the sweep drops the emptied nested stores
        self._sweep(lambda nested: nested._drop_markers())

    def _novel(self, mine: ORMap | None, cut: Cut) -> ORMap | None:
        theirs = self._fields
        ours = mine._fields if mine is not None else {}
        part = self._part(cut.part_ctx)
        keys = list(theirs)
        full = cut.full
        if full:
            keys += [key for key in ours if key not in theirs]
        for key in keys:
            their_fields = theirs.get(key) or {}
            my_fields = ours.get(key) or {}
            tags = list(their_fields)
            if full:
                tags += [tag for tag in my_fields if tag not in their_fields]
            for tag in tags:
                incoming = their_fields.get(tag)
                if incoming is None:  # only here; their context may still reset it
                    kind = type(my_fields[tag])
                    incoming = kind._blank(self._rid, cut.their_ctx, self._hlc, self._level + 1)
                nested = incoming._novel(my_fields.get(tag), cut)
                if nested is not None:
                    part._fields.setdefault(key, {})[tag] = nested
        return part if part._fields or cut.keep_all else None

    def _collapse(self, gone: str, up_to: int, part: Any) -> bool:
        changed = False
        for key, fields in self._fields.items():
            for tag, nested in fields.items():
                nested_part = nested._part(part._ctx)
                if nested._collapse(gone, up_to, nested_part):
                    part._fields.setdefault(key, {})[tag] = nested_part
                    changed = True
        return changed

    def _strip(self, pruned: Mapping[str, int]) -> None:
        self._sweep(lambda nested: nested._strip(pruned))

    def _prune(self, stable: Mapping[str, int], nested: bool) -> int:
        dropped = 0

        def prune(inner: CRDT) -> None:
            nonlocal dropped
            dropped += inner._prune(stable, True)

        self._sweep(prune)
        return dropped

    def _sweep(self, change: Callable[[CRDT], None]) -> None:
        """Apply ``change`` to every nested store; a full state then drops the emptied ones."""
        keep = self._delta
        for key in list(self._fields):
            fields = self._fields[key]
            for tag in list(fields):
                nested = fields[tag]
                change(nested)
                if not keep and nested._is_empty():
                    del fields[tag]
            if not fields:
                del self._fields[key]

    def _newest_ts(self, seen: CausalContext) -> int:
        return max(
            (n._newest_ts(seen) for fields in self._fields.values() for n in fields.values()),
            default=0,
        )

    # -- wire form --------------------------------------------------------------

    def _encode_body(self, writer: Writer) -> Any:
        """``[keys, tags, bodies]``: one row per (key, type), nested bodies inline."""
        if len(self._fields) == 1:  # one write's delta, the hot case
            ((key, fields),) = self._fields.items()
            if len(fields) == 1:
                ((tag, nested),) = fields.items()
                return [[key], [tag], [nested._encode_body(writer)]]
        keys, tags, bodies = [], [], []
        for key, fields in self._fields.items():
            for tag, nested in fields.items():
                keys.append(key)
                tags.append(tag)
                bodies.append(nested._encode_body(writer))
        return [keys, tags, bodies]

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        keys, tags, bodies = reader.columns(body, 3)
        keys = reader.list_of(keys, None, "keys")
        tags = reader.list_of(tags, len(keys), "tags")
        bodies = reader.list_of(bodies, len(keys), "bodies")
        level = blank._level + 1
        if level >= MAX_MAP_DEPTH and any(tag == cls.TAG for tag in tags):
            reader.fail(f"ORMaps nest deeper than {MAX_MAP_DEPTH}")
        fields: dict[Hashable, Fields] = {}
        for raw_key, tag, nested_body in zip(keys, tags, bodies, strict=True):
            kind = reader.kind(tag)
            key = reader.key(raw_key)
            slot = fields.setdefault(key, {})
            if tag in slot:
                reader.fail("a key holds the same type twice")
            nested = kind._blank(blank._rid, blank._ctx, blank._hlc, level)
            nested._delta = blank._delta
            kind._decode_body(reader, nested_body, nested)
            if not blank._delta and nested._is_empty():
                reader.fail("only a delta names keys it emptied")
            slot[tag] = nested
        blank._fields = fields
