"""PeerBackoff alone: window growth, cap, jitter spread and reset, on a fake clock."""

from __future__ import annotations

import random

import pytest

from agentsync.transport.backoff import PeerBackoff
from tests.transport.helpers import FakeClock


def _backoff(seed: int = 1, clock: FakeClock | None = None) -> PeerBackoff:
    return PeerBackoff(0.1, 10.0, random.Random(seed), clock or FakeClock())


def test_each_delay_lies_in_a_window_that_doubles_up_to_the_cap() -> None:
    for seed in range(50):
        backoff = _backoff(seed)
        for n in range(1, 12):
            delay = backoff.failure("peer")
            assert 0.0 <= delay <= min(10.0, 0.1 * 2 ** (n - 1))


def test_jitter_spreads_over_the_whole_window() -> None:
    delays = [_backoff(seed).failure("peer") for seed in range(200)]
    assert min(delays) < 0.01
    assert max(delays) > 0.09
    assert len(set(delays)) == 200


def test_a_long_outage_stays_capped_without_overflow() -> None:
    backoff = _backoff()
    delays = [backoff.failure("peer") for _ in range(2000)]
    assert backoff.failures("peer") == 2000
    assert max(delays) <= 10.0
    assert max(delays[-100:]) > 5.0, "late delays use the capped window, not a tiny one"


def test_waiting_out_the_delay_makes_the_peer_ready_again() -> None:
    clock = FakeClock()
    backoff = _backoff(clock=clock)
    backoff.failure("peer")
    backoff.failure("peer")
    delay = backoff.remaining("peer")
    assert delay > 0.0
    assert not backoff.ready("peer")
    clock.now += delay / 2
    assert backoff.remaining("peer") == pytest.approx(delay / 2)
    clock.now += delay / 2
    assert backoff.ready("peer")
    assert backoff.failures("peer") == 2, "ready again, but the count stands until a success"


def test_success_forgets_the_failures_and_peers_are_independent() -> None:
    backoff = _backoff()
    for _ in range(5):
        backoff.failure("a")
    backoff.failure("b")
    backoff.success("a")
    assert (backoff.failures("a"), backoff.remaining("a"), backoff.ready("a")) == (0, 0.0, True)
    assert backoff.failures("b") == 1
    backoff.success("never-failed")  # nothing to forget
    assert backoff.failures("never-failed") == 0


def test_the_same_seed_gives_the_same_delays() -> None:
    first, second = _backoff(42), _backoff(42)
    assert [first.failure("p") for _ in range(10)] == [second.failure("p") for _ in range(10)]


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        PeerBackoff(base, cap, random.Random(0), FakeClock())
