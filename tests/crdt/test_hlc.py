"""HybridLogicalClock, and how the LWW types use it across replicas."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentsync.crdt import (
    ClockSkewError,
    GCounter,
    HybridLogicalClock,
    LWWMap,
    LWWRegister,
    ORMap,
    decode,
    encode,
)
from tests.crdt.codec_strategies import INT64_MAX, FakeWall, canon

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND


# -- the clock ---------------------------------------------------------------------


def test_defaults() -> None:
    hlc = HybridLogicalClock()
    assert hlc.max_skew_ns == 60 * SECOND
    assert hlc.last == 0
    before = time.time_ns()
    stamp = hlc.now()
    assert before <= stamp <= time.time_ns()
    assert hlc.last == stamp
    assert "HybridLogicalClock" in repr(hlc)


def test_now_follows_a_wall_clock_that_moves_forward() -> None:
    wall = FakeWall(T0)
    hlc = HybridLogicalClock(wall)
    assert hlc.now() == T0
    wall.now = T0 + 5
    assert hlc.now() == T0 + 5


@given(st.lists(st.integers(0, 2**62), min_size=1, max_size=30))
def test_now_is_monotonic_whatever_the_wall_clock_does(walls: list[int]) -> None:
    wall = FakeWall(0)
    hlc = HybridLogicalClock(wall)
    previous = 0
    for reading in walls:
        wall.now = reading
        stamp = hlc.now()
        assert stamp > previous
        assert stamp >= reading
        assert stamp == max(reading, previous + 1)
        assert hlc.last == stamp
        previous = stamp


def test_now_when_the_wall_clock_stands_still_or_goes_back() -> None:
    wall = FakeWall(T0)
    hlc = HybridLogicalClock(wall)
    assert [hlc.now() for _ in range(3)] == [T0, T0 + 1, T0 + 2]
    wall.now = T0 - SECOND
    assert hlc.now() == T0 + 3


def test_observe_pushes_now_past_a_remote_timestamp() -> None:
    wall = FakeWall(T0)
    hlc = HybridLogicalClock(wall)
    hlc.observe(T0 + 10 * SECOND)
    assert hlc.last == T0 + 10 * SECOND
    hlc.observe(T0)  # an older timestamp does not move it back
    assert hlc.last == T0 + 10 * SECOND
    assert hlc.now() == T0 + 10 * SECOND + 1


@pytest.mark.parametrize("max_skew_ns", [0, 1, 60 * SECOND, 3600 * SECOND])
def test_check_bounds_how_far_ahead_a_timestamp_may_be(max_skew_ns: int) -> None:
    hlc = HybridLogicalClock(FakeWall(T0), max_skew_ns=max_skew_ns)
    hlc.check(0)
    hlc.check(T0)
    hlc.check(T0 + max_skew_ns)  # exactly at the bound is fine
    with pytest.raises(ClockSkewError, match="ahead"):
        hlc.check(T0 + max_skew_ns + 1)
    with pytest.raises(ValueError, match="ahead"):
        hlc.check(INT64_MAX)
    assert hlc.last == 0  # checking observes nothing


def test_clock_skew_error_is_a_value_error() -> None:
    assert issubclass(ClockSkewError, ValueError)


@pytest.mark.parametrize("clock", [None, 5, "time", T0], ids=repr)
def test_clock_must_be_callable(clock: Any) -> None:
    with pytest.raises(TypeError):
        HybridLogicalClock(clock)


@pytest.mark.parametrize("max_skew_ns", [-1, 1.5, True, None, "60"], ids=repr)
def test_max_skew_must_be_an_int_at_least_0(max_skew_ns: Any) -> None:
    with pytest.raises(ValueError, match="max_skew_ns"):
        HybridLogicalClock(FakeWall(), max_skew_ns=max_skew_ns)


@pytest.mark.parametrize("reading", [1.5e18, "now", None, True], ids=repr)
def test_the_wall_clock_must_return_int_nanoseconds(reading: Any) -> None:
    wall = FakeWall(T0)
    hlc = HybridLogicalClock(wall)
    hlc.now()
    wall.now = reading
    with pytest.raises(TypeError):
        hlc.now()
    assert hlc.last == T0


def test_now_refuses_to_leave_int64() -> None:
    wall = FakeWall(INT64_MAX)
    hlc = HybridLogicalClock(wall)
    assert hlc.now() == INT64_MAX
    with pytest.raises(OverflowError):
        hlc.now()
    assert hlc.last == INT64_MAX


def test_copy_is_independent() -> None:
    wall = FakeWall(T0)
    hlc = HybridLogicalClock(wall, max_skew_ns=7)
    hlc.now()
    twin = hlc.copy()
    assert twin.last == hlc.last
    assert twin.max_skew_ns == 7
    twin.now()
    assert hlc.last == T0
    wall.now = T0 + 100
    assert twin.now() == T0 + 100  # the same wall clock


# -- LWW across replicas -------------------------------------------------------------

CLOCKED_WRITES: dict[str, tuple[Callable[..., Any], Callable[[Any, Any], Any], Callable[..., Any]]]
CLOCKED_WRITES = {
    "LWWRegister": (LWWRegister, lambda x, v: x.set(v), lambda x: x.value),
    "LWWMap": (LWWMap, lambda x, v: x.set("k", v), lambda x: x.get("k")),
    "ORMap register": (
        ORMap,
        lambda x, v: x.update("k", LWWRegister, lambda r: r.set(v)),
        lambda x: x["k"].value if "k" in x else None,
    ),
    "ORMap LWWMap": (
        ORMap,
        lambda x, v: x.update("k", LWWMap, lambda m: m.set("f", v)),
        lambda x: x["k"].get("f") if "k" in x else None,
    ),
    "deep ORMap": (
        ORMap,
        lambda x, v: x.update(
            "a",
            ORMap,
            lambda m: m.update(
                "b", ORMap, lambda n: n.update("r", LWWRegister, lambda r: r.set(v))
            ),
        ),
        lambda x: x.value.get("a", {}).get("b", {}).get("r"),
    ),
}
CASES = pytest.mark.parametrize("case", CLOCKED_WRITES.values(), ids=CLOCKED_WRITES.keys())


@CASES
def test_a_write_after_merging_wins_though_the_local_clock_is_behind(case: Any) -> None:
    kind, write, read = case
    ahead = kind("zz-ahead", clock=FakeWall(T0 + 30 * SECOND))
    behind = kind("aa-behind", clock=FakeWall(T0))
    write(ahead, "remote")
    behind.merge(ahead)
    assert read(behind) == "remote"
    delta = write(behind, "local")  # its wall clock says T0, 30 s before the remote write
    assert read(behind) == "local"
    ahead.merge(delta)
    assert read(ahead) == "local"
    assert behind.clock.last > T0 + 30 * SECOND


@CASES
def test_a_write_after_a_delta_wins_too(case: Any) -> None:
    kind, write, read = case
    ahead = kind("zz-ahead", clock=FakeWall(T0 + 30 * SECOND))
    behind = kind("aa-behind", clock=FakeWall(T0))
    behind.merge(write(ahead, "remote"))
    ahead.merge(write(behind, "local"))
    assert read(ahead) == read(behind) == "local"


@CASES
def test_a_write_after_decoding_wins_too(case: Any) -> None:
    kind, write, read = case
    ahead = kind("zz-ahead", clock=FakeWall(T0 + 30 * SECOND))
    behind = kind("aa-behind", clock=FakeWall(T0))
    write(ahead, "remote")
    behind.merge(decode(encode(ahead)))
    ahead.merge(write(behind, "local"))
    assert read(ahead) == read(behind) == "local"


@CASES
def test_concurrent_writes_resolve_by_timestamp_then_replica_id(case: Any) -> None:
    kind, write, read = case
    a = kind("a", clock=FakeWall(T0 + 2))
    b = kind("b", clock=FakeWall(T0 + 1))
    c = kind("c", clock=FakeWall(T0 + 1))
    write(a, "a")
    write(b, "b")
    write(c, "c")
    for x, y in [(b, c), (c, b)]:
        x.merge(y)
    assert read(b) == read(c) == "c"  # same timestamp: the greater replica id wins
    for x, y in [(b, a), (c, a), (a, b)]:
        x.merge(y)
    assert read(a) == read(b) == read(c) == "a"  # the later timestamp wins


class Snapshot:
    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.copy = replica.copy()
        self.value = canon(replica.value)
        self.encoding = encode(replica)
        self.last = replica.clock.last

    def assert_unchanged(self) -> None:
        assert self.replica == self.copy
        assert canon(self.replica.value) == self.value
        assert encode(self.replica) == self.encoding
        assert self.replica.clock.last == self.last


@CASES
@pytest.mark.parametrize("as_delta", [False, True], ids=["state", "delta"])
def test_a_merge_from_too_far_ahead_is_refused_and_changes_nothing(
    case: Any, as_delta: bool
) -> None:
    kind, write, _ = case
    local = kind("local", clock=FakeWall(T0))
    write(local, "mine")
    if kind is ORMap:
        local.update("n", GCounter, lambda c: c.increment())
    remote = kind("remote", clock=FakeWall(T0 + 60 * SECOND + 1))
    remote.merge(local)
    delta = write(remote, "from the future")
    snapshot = Snapshot(local)
    with pytest.raises(ValueError, match="ahead") as caught:
        local.merge(delta if as_delta else remote)
    assert isinstance(caught.value, ClockSkewError)
    snapshot.assert_unchanged()


@CASES
def test_a_merge_exactly_at_the_skew_bound_is_accepted(case: Any) -> None:
    kind, write, read = case
    local = kind("local", clock=FakeWall(T0))
    remote = kind("remote", clock=FakeWall(T0 + 60 * SECOND))
    write(remote, "edge")
    local.merge(remote)
    assert read(local) == "edge"


@CASES
def test_the_skew_bound_only_applies_to_unseen_timestamps(case: Any) -> None:
    kind, write, read = case
    wall = FakeWall(T0)
    local = kind("local", clock=wall)
    remote = kind("remote", clock=FakeWall(T0 + 50 * SECOND))
    write(remote, "x")
    local.merge(remote)
    wall.now = T0 - 3600 * SECOND  # the local wall clock jumps back an hour
    local.merge(remote)  # nothing new: no check
    assert read(local) == "x"
    with pytest.raises(ClockSkewError):
        local.merge(write(remote, "y"))


def test_custom_skew_bound_through_a_shared_clock() -> None:
    hlc = HybridLogicalClock(FakeWall(T0), max_skew_ns=SECOND)
    local = LWWMap("local", clock=hlc)
    remote = LWWMap("remote", clock=FakeWall(T0 + 2 * SECOND))
    remote.set("k", 1)
    with pytest.raises(ClockSkewError):
        local.merge(remote)
    hlc.max_skew_ns = 3 * SECOND
    local.merge(remote)
    assert local["k"] == 1


def test_registers_sharing_a_clock_order_their_writes() -> None:
    wall = FakeWall(T0)
    hlc = HybridLogicalClock(wall)
    register = LWWRegister("a", clock=hlc)
    lww_map = LWWMap("a", clock=hlc)
    ormap = ORMap("a", clock=hlc)
    register.set(1)
    lww_map.set("k", 1)
    ormap.update("r", LWWRegister, lambda r: r.set(1))
    assert hlc.last == T0 + 2
    assert ormap["r"].clock is hlc
