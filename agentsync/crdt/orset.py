"""ORSet: the add-wins observed-remove set (Almeida et al. 2018, section 7.4).

Each element maps to the dots of the adds that are still alive. A remove
drops the dots it observed and leaves no tombstone: the causal context
remembers them. A remove also issues a dot of its own, stored nowhere, so
that every change shows in the context (see ``base``). An add concurrent
with a remove issued a dot the remove did not observe, so the add wins.
"""

from __future__ import annotations

from collections.abc import Hashable

from agentsync.crdt.base import bare_delta
from agentsync.crdt.setbase import SetBase
from agentsync.crdt.values import freeze_key


class ORSet(SetBase):
    """An add-wins set: ``add``, ``remove``, ``discard`` and ``clear`` return deltas."""

    __slots__ = ()
    TAG = "os"

    def remove(self, element: object) -> ORSet:
        """Remove ``element``; KeyError if it is absent."""
        if self._delta:
            self._ensure_replica()
        key = freeze_key(element)
        if not self._entries.get(key):
            raise KeyError(element)
        return self._drop(key)

    def discard(self, element: object) -> ORSet:
        """Remove ``element`` if present; the delta is empty otherwise."""
        if self._delta:
            self._ensure_replica()
        key = freeze_key(element)
        if not self._entries.get(key):
            return self._delta_shell(())
        return self._drop(key)

    def clear(self) -> ORSet:
        """Remove every element observed here and return the delta."""
        if self._delta:
            self._ensure_replica()
        if not self._entries:
            return self._delta_shell(())
        delta = self._delta_shell([*self._dots(), self._ctx.next_dot(self._rid)])
        delta._entries = dict.fromkeys(self._entries, ())
        self._entries.clear()
        return delta

    def _drop(self, key: Hashable) -> ORSet:
        observed = self._entries.pop(key)
        delta = bare_delta(type(self), self._rid, {*observed, self._ctx.next_dot(self._rid)})
        delta._entries = {key: ()}
        return delta
