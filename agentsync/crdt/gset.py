"""GSet: a grow-only set whose elements carry dots, so an ORMap can reset it."""

from __future__ import annotations

from agentsync.crdt.setbase import SetBase
from agentsync.crdt.values import freeze_key


class GSet(SetBase):
    """A grow-only set. Adding an element already present changes nothing."""

    __slots__ = ()
    TAG = "gs"

    def add(self, element: object) -> GSet:
        """Add ``element`` and return the delta (empty if it was present)."""
        if self._delta:
            self._ensure_replica()
        key = freeze_key(element)
        if self._entries.get(key):
            return self._delta_shell(())
        dot = self._issue()
        self._entries[key] = (dot,)
        delta = self._delta_shell((dot,))
        delta._entries[key] = (dot,)
        return delta
