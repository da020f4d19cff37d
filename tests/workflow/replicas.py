"""Task boards on bare replicas: no network and no loop, deltas delivered by hand.

A ``Replica`` stands in for a Node where the property tests need every
delivery order: a write through a handle applies to its ``ORMap`` and queues
the delta for every other replica, and ``deliver`` merges one queued delta,
through the wire form, in whatever order a test picks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentsync.crdt import ORMap, decode, encode
from agentsync.handles import Container, H, Path
from agentsync.node import Change, _update
from agentsync.workflow import TaskBoard


class Clock:
    """A fake clock in seconds that tests move by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Replica(Container):
    """One node's top-level ORMap behind handles; ``inbox`` holds deltas not merged yet."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.state = ORMap(node_id)
        self.inbox: list[bytes] = []
        self.peers: list[Replica] = []

    def _child(self, key: object, handle: type[H]) -> H:
        return handle(self, ((key, handle.KIND),))

    def _check(self, path: Path) -> None:
        """The board reads only whole top-level names, so there is nothing to refuse."""

    def _read(self, path: Path) -> Any:
        ((key, _kind),) = path
        return self.state.get(key)

    def _write(
        self, path: Path, fn: Callable[[Any], Any], in_place: object = None, arg: object = None
    ) -> None:
        """Every write through its delta: the in-place form is the Node's shortcut."""
        wire = encode(_update(self.state, path, fn))
        for peer in self.peers:
            peer.inbox.append(wire)

    def deliver(self, index: int = 0) -> None:
        """Merge the ``index``-th delta waiting here."""
        self.state.merge(decode(self.inbox.pop(index)))

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Every write already goes out as its own delta; a batch groups nothing here."""
        return contextlib.nullcontext()

    def changes(self) -> AsyncIterator[Change]:
        raise NotImplementedError("no loop here: watch() is tested on real nodes")


def cluster(n: int, clock: Clock, lease: float) -> list[tuple[Replica, TaskBoard]]:
    """``n`` replicas that all hear each other, each with a board named ``tasks``."""
    replicas = [Replica(f"node-{i}") for i in range(n)]
    for replica in replicas:
        replica.peers = [peer for peer in replicas if peer is not replica]
    return [(replica, TaskBoard(replica, lease=lease, clock=clock)) for replica in replicas]


def deliver_all(replicas: list[Replica], order: list[int] | None = None) -> None:
    """Deliver every waiting delta; each replica takes its inbox in ``order`` when given
    (indices into the inbox, taken modulo its remaining length)."""
    for replica in replicas:
        picks = iter(order or ())
        while replica.inbox:
            replica.deliver(next(picks, 0) % len(replica.inbox))
