"""GCounter and PNCounter: causal counters that an ORMap can reset.

Each replica's contribution is one entry ``(replica_id, n, total)`` under its
latest dot; an increment replaces it with a new dot and the new total. This
is the causal counter of Almeida et al. (2018, section 7.2) and riak_dt's
``emcntr``. Unlike a plain max-per-replica counter, it can be embedded in an
ORMap: a remove resets every contribution it observed, while a replica that
incremented concurrently keeps its whole contribution (update-wins).
"""

from __future__ import annotations

from typing import Any

from agentsync.crdt.base import FlatStore
from agentsync.crdt.codec import Reader, Writer
from agentsync.crdt.dots import Entry, InPlace
from agentsync.crdt.values import INT64_MAX, INT64_MIN, check_amount
from agentsync.errors import IntegerRangeError


class _CausalCounter(FlatStore):
    __slots__ = ()

    _floor = 0
    """The smallest total one replica may reach (int64 floor for PNCounter)."""

    @property
    def value(self) -> int:
        """The sum of every replica's contribution."""
        return sum(entry[2] for entry in self._entries)

    def _add(self, n: int, sign: int) -> Any:
        """Validate a step (an int >= 0; 0 changes nothing) and apply ``sign * n``.

        The new entry carries this replica's whole new total under a new dot,
        superseding its previous entries. This is the hot path of a counter.
        """
        if self._delta:
            self._ensure_replica()
        if type(n) is not int or not 0 < n <= INT64_MAX:
            check_amount(n)
            return self._delta_shell(())
        entry, own, rest = self._stepped(n, sign)
        return self._replace(entry, own, rest)

    def _step_in_place(self, step: tuple[int, int]) -> InPlace | None:
        """``_add(*step)`` on a replica, without its delta (see ``InPlace``); None when
        it changes nothing (a step of 0)."""
        n, sign = step
        if type(n) is not int or not 0 < n <= INT64_MAX:
            check_amount(n)
            return None
        entry, own, rest = self._stepped(n, sign)
        return self._replace_in_place(entry, own, rest)

    def _stepped(self, n: int, sign: int) -> tuple[Entry, tuple[Entry, ...], list[Entry]]:
        """The entry that ``sign * n`` makes under a new dot, the entries it supersedes
        and those it keeps (other replicas'); IntegerRangeError, issuing no dot, when
        this replica's total would leave the counter's range."""
        rid = self._rid
        entries = self._entries
        if len(entries) == 1 and entries[0][0] == rid:  # a lone writer
            own: tuple[Entry, ...] = entries
            rest: list[Entry] = []
            total = entries[0][2] + sign * n
        else:
            own = tuple(e for e in entries if e[0] == rid)
            rest = [e for e in entries if e[0] != rid]
            total = sum(e[2] for e in own) + sign * n
        if not self._floor <= total <= INT64_MAX:
            raise IntegerRangeError(f"this replica's total would leave the int64 range: {total}")
        dot = self._ctx.next_dot(rid)
        return (rid, dot[1], total), own, rest

    def _encode_body(self, writer: Writer) -> Any:
        """``[dot runs, dot counters, totals]``."""
        entries = self._entries
        if len(entries) == 1:  # one increment's delta, the hot case
            rid, n, total = entries[0]
            return [[writer.replica_index(rid), 1], [n], [total]]
        return [*writer.dot_columns(entries), [e[2] for e in entries]]

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        runs, counters, totals = reader.columns(body, 3)
        dots = reader.dots(runs, counters)
        totals = reader.list_of(totals, len(dots), "totals")
        for total in totals:
            reader.int_in(total, cls._floor, INT64_MAX, "counter total")
        blank._entries = reader.sorted_entries(
            [(r, n, t) for (r, n), t in zip(dots, totals, strict=True)]
        )


class GCounter(_CausalCounter):
    """A grow-only counter. ``increment(n)`` adds n >= 0; ``value`` is the sum."""

    __slots__ = ()
    TAG = "gc"

    def increment(self, n: int = 1) -> GCounter:
        """Add ``n`` (an int >= 0) and return the delta."""
        return self._add(n, 1)  # type: ignore[no-any-return]


class PNCounter(_CausalCounter):
    """A counter that goes up and down; each replica's total fits int64."""

    __slots__ = ()
    TAG = "pn"
    _floor = INT64_MIN

    def increment(self, n: int = 1) -> PNCounter:
        """Add ``n`` (an int >= 0) and return the delta."""
        return self._add(n, 1)  # type: ignore[no-any-return]

    def decrement(self, n: int = 1) -> PNCounter:
        """Subtract ``n`` (an int >= 0) and return the delta."""
        return self._add(n, -1)  # type: ignore[no-any-return]
