"""Per-peer exponential backoff with full jitter.

After ``n`` consecutive failures a peer waits a delay drawn uniformly from
``[0, min(max, base * 2**(n-1))]`` (the "full jitter" of the AWS
architecture blog), so that many nodes retrying one recovered peer spread
out instead of arriving together. One success forgets the peer's failures.
The random source and the clock are injected, so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_EXPONENT = 64
"""Past this many failures the window is capped anyway; it keeps 2**n small."""


@dataclass(slots=True)
class _Failing:
    failures: int
    until: float


class PeerBackoff:
    """When each failing peer may be tried again; only failing peers are held."""

    def __init__(
        self, base: float, cap: float, rng: random.Random, clock: Callable[[], float]
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < backoff_base <= backoff_max")
        self._base = base
        self._cap = cap
        self._rng = rng
        self._clock = clock
        self._peers: dict[str, _Failing] = {}

    def failure(self, peer: str) -> float:
        """Record a failure; return the delay drawn before the next try."""
        state = self._peers.get(peer)
        failures = state.failures if state else 0
        window = min(self._cap, self._base * 2.0 ** min(failures, _MAX_EXPONENT))
        delay = self._rng.uniform(0.0, window)
        self._peers[peer] = _Failing(failures + 1, self._clock() + delay)
        return delay

    def success(self, peer: str) -> None:
        """Forget the peer's failures: it is ready at once."""
        self._peers.pop(peer, None)

    def failures(self, peer: str) -> int:
        """Consecutive failures since the last success."""
        state = self._peers.get(peer)
        return state.failures if state else 0

    def remaining(self, peer: str) -> float:
        """Seconds until the peer may be tried again (0.0 when it may be now)."""
        state = self._peers.get(peer)
        return max(0.0, state.until - self._clock()) if state else 0.0

    def ready(self, peer: str) -> bool:
        """True unless the peer is waiting out a backoff."""
        return self.remaining(peer) == 0.0
