"""A hybrid logical clock (Kulkarni et al., 2014) in one int64 of nanoseconds.

Timestamps are wall-clock nanoseconds, pushed forward when needed so that
every timestamp a replica issues is greater than every timestamp it issued or
observed before. A write made after merging another replica's write therefore
carries a later timestamp, even when the local wall clock is behind. The
logical counter of the classic HLC is folded into the low nanoseconds, which
keeps a timestamp one int that fits msgpack's int64 until the year 2262.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agentsync.crdt.values import INT64_MAX

DEFAULT_MAX_SKEW_NS = 60 * 1_000_000_000
"""How far ahead of the local wall clock a remote timestamp may be (60 s)."""

WallClock = Callable[[], int]
"""A wall clock: returns nanoseconds since the Unix epoch, like ``time.time_ns``."""


class ClockSkewError(ValueError):
    """A remote timestamp lies further ahead of the local clock than allowed."""


class HybridLogicalClock:
    """Issues monotonic timestamps and refuses remote ones from the far future.

    ``max_skew_ns`` bounds how far ahead of this replica's wall clock a remote
    timestamp may be. Without the bound, one peer with a clock set to 2099
    would freeze every last-writer-wins value it touched, forever (MongoDB's
    ``maxAcceptableLogicalClockDrift`` is the precedent).
    """

    __slots__ = ("_last", "_wall", "max_skew_ns")

    def __init__(
        self, clock: WallClock = time.time_ns, *, max_skew_ns: int = DEFAULT_MAX_SKEW_NS
    ) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning nanoseconds")
        if type(max_skew_ns) is not int or max_skew_ns < 0:
            raise ValueError("max_skew_ns must be an int >= 0")
        self._wall = clock
        self._last = 0
        self.max_skew_ns = max_skew_ns

    @property
    def last(self) -> int:
        """The greatest timestamp issued or observed so far."""
        return self._last

    def now(self) -> int:
        """Issue a timestamp greater than every one issued or observed before."""
        wall = self._wall()
        if type(wall) is not int:
            raise TypeError(f"the wall clock returned {type(wall).__name__}, not int nanoseconds")
        if wall <= self._last:
            wall = self._last + 1
        if wall > INT64_MAX:
            raise OverflowError("the hybrid logical clock is past the int64 range")
        self._last = wall
        return wall

    def check(self, timestamp: int) -> None:
        """Raise ClockSkewError if ``timestamp`` is too far ahead of the wall clock."""
        limit = self._wall() + self.max_skew_ns
        if timestamp > limit:
            ahead = (timestamp - limit + self.max_skew_ns) / 1e9
            raise ClockSkewError(
                f"remote timestamp {timestamp} is {ahead:.3f} s ahead of the local clock; "
                f"at most {self.max_skew_ns / 1e9:g} s is accepted"
            )

    def observe(self, timestamp: int) -> None:
        """Advance past a timestamp already checked (or read from local storage)."""
        self._last = max(self._last, timestamp)

    def copy(self) -> HybridLogicalClock:
        """An independent clock with the same wall clock, bound and position."""
        twin = HybridLogicalClock(self._wall, max_skew_ns=self.max_skew_ns)
        twin._last = self._last
        return twin

    def __repr__(self) -> str:
        return f"HybridLogicalClock(last={self._last}, max_skew_ns={self.max_skew_ns})"


def as_hlc(clock: WallClock | HybridLogicalClock) -> HybridLogicalClock:
    """A wall clock wrapped in a fresh HLC, or a given HLC itself (to share it)."""
    if isinstance(clock, HybridLogicalClock):
        return clock
    return HybridLogicalClock(clock)
