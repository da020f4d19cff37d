"""The replay guard: seq windows per sender and epoch, the time window, bounded memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentsync.errors import AuthenticationError
from agentsync.security import ReplayGuard
from agentsync.security.replay import SEQ_WINDOW

NOW_MS = 1_000_000_000


class Clock:
    def __init__(self, ms: int = NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def guard(**kwargs: float) -> ReplayGuard:
    return ReplayGuard(clock=Clock(), **kwargs)  # type: ignore[arg-type]


def accepted(guard: ReplayGuard, sender: str, epoch: int, seq: int, ts: int = NOW_MS) -> bool:
    try:
        guard.admit(sender, epoch, seq, ts)
    except AuthenticationError:
        return False
    return True


@given(st.lists(st.integers(0, 3 * SEQ_WINDOW), max_size=200))
def test_each_seq_is_accepted_once_and_only_within_the_window(seqs: list[int]) -> None:
    """The model: a seq passes iff unseen and above (highest seen - SEQ_WINDOW)."""
    g = guard()
    seen: set[int] = set()
    for seq in seqs:
        fresh = seq not in seen and (not seen or seq > max(seen) - SEQ_WINDOW)
        assert accepted(g, "a", 1, seq) is fresh, seq
        if fresh:
            seen.add(seq)


def test_reordering_within_the_window_passes() -> None:
    g = guard()
    seqs = list(range(1, SEQ_WINDOW + 1))
    random.Random(6).shuffle(seqs)
    assert all(accepted(g, "a", 1, seq) for seq in seqs)
    assert not any(accepted(g, "a", 1, seq) for seq in seqs)


def test_a_huge_jump_does_not_blow_up_the_bitmap() -> None:
    g = guard()
    assert accepted(g, "a", 1, (1 << 64) - 1)
    assert accepted(g, "a", 1, (1 << 64) - 2)
    assert not accepted(g, "a", 1, 5)


def test_senders_and_epochs_have_their_own_windows() -> None:
    g = guard()
    assert accepted(g, "a", 1, 1)
    assert accepted(g, "b", 1, 1)
    assert accepted(g, "a", 2, 1)  # a restarted sender counts again
    assert not accepted(g, "a", 1, 1)
    assert len(g) == 3


@pytest.mark.parametrize("offset_s", [-61, 61, -3600])
def test_timestamps_outside_the_window_are_refused(offset_s: int) -> None:
    g = guard()
    with pytest.raises(AuthenticationError, match="outside the window"):
        g.admit("a", 1, 1, NOW_MS + offset_s * 1000)
    assert len(g) == 0  # refused before anything is recorded


def test_a_stale_window_is_forgotten_and_its_replays_still_refused() -> None:
    clock = Clock()
    g = ReplayGuard(clock=clock, window_s=10)
    assert accepted(g, "a", 1, 1, NOW_MS)
    clock.ms += 11_000
    assert accepted(g, "b", 1, 1, clock.ms)
    assert len(g) == 1  # a's window expired
    assert not accepted(g, "a", 1, 1, NOW_MS)  # its replay is too old


def test_the_bound_forgets_fresh_windows_behind_a_horizon() -> None:
    g = guard(max_tracked=2)
    assert accepted(g, "a", 1, 1, NOW_MS - 5)
    assert accepted(g, "b", 1, 1, NOW_MS - 3)
    assert accepted(g, "c", 1, 1, NOW_MS - 1)  # forgets a
    assert len(g) == 2
    assert not accepted(g, "a", 1, 1, NOW_MS - 5)  # a's replay: not newer than the horizon
    assert accepted(g, "d", 1, 1, NOW_MS)  # a newer sender still gets in


def test_a_refused_message_changes_nothing() -> None:
    g = guard()
    assert accepted(g, "a", 1, 10)
    assert not accepted(g, "a", 1, 10)
    assert accepted(g, "a", 1, 9)


@pytest.mark.parametrize("kwargs", [{"window_s": 0}, {"max_tracked": 0}])
def test_bad_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        guard(**kwargs)
