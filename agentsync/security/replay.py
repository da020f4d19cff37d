"""Replay protection: each sender's sequence numbers within its epoch, and a time window.

An envelope is fresh when its timestamp lies within ``window_s`` of this
node's clock and its ``(sender, epoch, seq)`` was not accepted before. Per
sender and epoch a sliding window of ``SEQ_WINDOW`` seqs below the highest
one seen remembers which arrived (as IPsec does), so reordered messages
pass and duplicates do not; a seq below the window is refused as too old.

Memory is bounded: a sender's window is dropped once its newest timestamp
left the time window (a replay of it would be refused for its timestamp
anyway), and at most ``max_tracked`` windows are kept. When the bound
forces out a window still in the time window, the guard remembers its
newest timestamp as a horizon and refuses any new ``(sender, epoch)`` not
newer than it: a replay is never let through, at the price of refusing a
slow clock's first messages under that load. Checks run only after the
envelope authenticated, so only members can fill the table.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from agentsync.errors import AuthenticationError

DEFAULT_WINDOW_S = 60.0
"""How far a message's timestamp may be from this node's clock, either way."""
SEQ_WINDOW = 1024
"""How many seqs below the highest are remembered per sender and epoch."""
DEFAULT_MAX_TRACKED = 4096
"""The most (sender, epoch) windows remembered at once."""


class _Window:
    """The seqs seen of one sender in one epoch: the highest, and a bitmap below it."""

    __slots__ = ("mask", "newest_ms", "top")

    def __init__(self) -> None:
        self.top = -1
        self.mask = 0
        """Bit i set: seq ``top - i`` arrived."""
        self.newest_ms = 0

    def admit(self, seq: int) -> None:
        if seq > self.top:
            shift = seq - self.top
            self.mask = 1 if shift >= SEQ_WINDOW else ((self.mask << shift) | 1) & _FULL
            self.top = seq
            return
        behind = self.top - seq
        if behind >= SEQ_WINDOW:
            raise AuthenticationError(f"replayed or too old: seq {seq} is below the window")
        if self.mask >> behind & 1:
            raise AuthenticationError(f"replayed: seq {seq} was accepted before")
        self.mask |= 1 << behind


_FULL = (1 << SEQ_WINDOW) - 1


class ReplayGuard:
    """Refuses a sealed message seen before, or too far in time (``AuthenticationError``)."""

    def __init__(
        self,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not window_s > 0 or max_tracked < 1:
            raise ValueError("a replay guard needs window_s > 0 and max_tracked >= 1")
        self._window_ms = round(window_s * 1000)
        self._max_tracked = max_tracked
        self._clock = clock
        self._tracked: OrderedDict[tuple[str, int], _Window] = OrderedDict()
        self._horizon_ms = -1
        """New senders must be newer than this: a window still fresh was forgotten here."""

    def admit(self, sender: str, epoch: int, seq: int, timestamp_ms: int) -> None:
        """Record the message if it is fresh; AuthenticationError (and no record) if not."""
        now_ms = round(self._clock() * 1000)
        if abs(timestamp_ms - now_ms) > self._window_ms:
            raise AuthenticationError(
                f"timestamp {(timestamp_ms - now_ms) / 1000:+.1f} s from this node's clock, "
                f"outside the window of {self._window_ms / 1000:g} s (replayed, or clocks apart)"
            )
        self._expire(now_ms)
        key = (sender, epoch)
        window = self._tracked.get(key)
        if window is None:
            if timestamp_ms <= self._horizon_ms:
                raise AuthenticationError(
                    "not newer than the replay state this node had to forget under load"
                )
            window = _Window()
        window.admit(seq)
        window.newest_ms = max(window.newest_ms, timestamp_ms)
        self._tracked[key] = window
        self._tracked.move_to_end(key)
        if len(self._tracked) > self._max_tracked:
            _, forgotten = self._tracked.popitem(last=False)
            self._horizon_ms = max(self._horizon_ms, forgotten.newest_ms)

    def _expire(self, now_ms: int) -> None:
        """Drop the windows, least recently used first, whose newest message is too old."""
        tracked = self._tracked
        while tracked and next(iter(tracked.values())).newest_ms < now_ms - self._window_ms:
            tracked.popitem(last=False)

    def __len__(self) -> int:
        return len(self._tracked)
