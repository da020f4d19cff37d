"""GSet: a grow-only set whose elements carry dots, so an ORMap can reset it."""

from __future__ import annotations

from agentsync.crdt.setbase import SetBase


class GSet(SetBase):
    """A grow-only set: ``add(e)`` returns the delta; there is no remove.

    Its elements carry dots like an ORSet's, so that an ORMap holding it can
    reset what a remove observed, and an add concurrent with that remove wins.
    """

    __slots__ = ()
    TAG = "gs"
