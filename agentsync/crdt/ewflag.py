"""EWFlag: an enable-wins flag (a DotSet, Almeida et al. 2018, section 7.3)."""

from __future__ import annotations

from typing import Any

from agentsync.crdt.base import FlatStore
from agentsync.crdt.codec import Reader, Writer
from agentsync.crdt.dots import InPlace


class EWFlag(FlatStore):
    """A boolean flag on which a concurrent ``enable`` beats ``disable``.

    ``enable`` always issues a new dot, so a disable that did not observe it
    cannot turn it off; ``disable`` drops only the dots it observed.
    """

    __slots__ = ()
    TAG = "ef"
    _DOT_SET = True

    @property
    def value(self) -> bool:
        """True when at least one enable survives."""
        return bool(self._entries)

    def enable(self) -> EWFlag:
        """Turn the flag on and return the delta."""
        return self._replace(self._issue(), self._entries)

    def _enable_in_place(self, _: object = None) -> InPlace:
        """``enable`` without its delta (``LocalGroup.step``)."""
        return self._replace_in_place(self._issue(), self._entries)

    def disable(self) -> EWFlag:
        """Turn the flag off (the enables observed here) and return the delta."""
        if self._delta:
            self._ensure_replica()
        observed = self._entries
        if not observed:
            return self._delta_shell(())
        self._entries = ()
        return self._delta_shell([*observed, self._ctx.next_dot(self._rid)])

    def _encode_body(self, writer: Writer) -> Any:
        return writer.dot_columns(self._entries)

    @classmethod
    def _decode_body(cls, reader: Reader, body: Any, blank: Any) -> None:
        runs, counters = reader.columns(body, 2)
        blank._entries = reader.sorted_entries(reader.dots(runs, counters))
