"""``TaskBoard.prune``: what it removes, what it keeps, and what concurrency leaves.

Boards sit on ``tests.workflow.replicas`` (no network; deltas delivered by
hand in the order a test picks). Pruning must remove exactly the tasks
finished before the cutoff that no unfinished task waits on, leave every
other view as it was, and shrink the replicated value. Under concurrency a
removal is observed-remove, update-wins: a write made concurrently with the
prune survives as records without a spec, which no view shows; a task
depending on a pruned id stays blocked; a pruned id posted again is a new
task.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentsync.claims import COMPLETIONS, SPEC, Status
from agentsync.crdt import encode
from agentsync.crdt.codec import _packed
from agentsync.workflow import TaskBoard
from tests.workflow.replicas import Clock, Replica, cluster, deliver_all

LEASE = 10.0
START = 1_000.0


def raw(replica: Replica) -> dict[Any, Any]:
    """The board's replicated value on ``replica``: task id -> its records."""
    return replica.map("tasks").value


def size(replica: Replica) -> int:
    """The replica's encoded bytes before DEFLATE (which would hide a drop near its threshold)."""
    return len(_packed(replica.state))


def test_prune_removes_old_finished_tasks_no_unfinished_task_waits_on() -> None:
    clock = Clock(START)
    (ra, a), (rb, b) = cluster(2, clock, LEASE)
    for task_id in ["old-done", "old-failed", "needed", "chain-1", "recent", "open", "claimed"]:
        a.post(task_id, {"id": task_id})
    a.post("waiting", depends_on=["needed"])  # unfinished: keeps "needed"
    a.post("chain-2", depends_on=["chain-1"])  # finished: does not keep "chain-1"
    assert a.complete("old-done", 1) and a.fail("old-failed", "no data")
    assert a.complete("needed", 2) and a.complete("chain-1", 3) and a.complete("chain-2", 4)
    assert a.claim("ann") is not None and a.task("claimed").status is not Status.CLAIMED
    clock.now += 5
    assert a.complete("recent", 5)
    deliver_all([ra, rb])
    before, held = a.tasks(), size(ra)

    pruned = a.prune(START + 1)

    assert pruned == ["chain-1", "chain-2", "old-done", "old-failed"]
    assert a.tasks() == {k: v for k, v in before.items() if k not in pruned}
    assert sorted(raw(ra)) == sorted(set(before) - set(pruned))
    assert size(ra) < held
    assert a.task("waiting").status is Status.OPEN  # its dependency is still there
    assert a.prune(START + 1) == []  # nothing more to remove
    deliver_all([ra, rb])
    assert b.tasks() == a.tasks() and raw(rb) == raw(ra)


def test_the_cutoff_is_strict_and_infinities_mean_all_or_nothing() -> None:
    clock = Clock(START)
    ((_, board),) = cluster(1, clock, LEASE)
    board.post("t")
    assert board.complete("t")
    finished_at = board.task("t").finished_at
    assert finished_at is not None
    assert board.prune(finished_at / 1e9 - 1) == [] and board.prune(-math.inf) == []
    assert board.prune(math.inf) == ["t"] and board.tasks() == {}


@pytest.mark.parametrize(
    ("bad", "error"),
    [(True, TypeError), ("1000", TypeError), (None, TypeError), (math.nan, ValueError)],
)
def test_a_bad_cutoff_is_refused_with_nothing_changed(bad: Any, error: type[Exception]) -> None:
    clock = Clock(START)
    (ra, board), (rb, _) = cluster(2, clock, LEASE)
    board.post("t")
    assert board.complete("t")
    rb.inbox.clear()
    held = raw(ra)
    with pytest.raises(error, match="finished_before"):
        board.prune(bad)
    assert raw(ra) == held and rb.inbox == []


FATES = st.sampled_from(["none", "claim", "done", "failed"])


@given(
    plan=st.lists(
        st.tuples(st.sets(st.integers(0, 7), max_size=2), FATES, st.integers(0, 1)), max_size=8
    ),
    cutoff=st.integers(0, 8),
)
def test_prune_removes_exactly_what_the_rule_names_and_changes_no_other_view(
    plan: list[tuple[set[int], str, int]], cutoff: int
) -> None:
    clock = Clock(START)
    (ra, board), (rb, other) = cluster(2, clock, LEASE)
    finished: dict[str, float] = {}  # task id -> the second it finished in
    depends: dict[str, list[str]] = {}
    for i, (deps, _, _) in enumerate(plan):
        depends[f"t{i}"] = [f"t{d}" for d in sorted(deps) if d < i]
        board.post(f"t{i}", i, depends[f"t{i}"])
    for i, (_, fate, wait) in enumerate(plan):
        clock.now += wait  # stamps are monotonic: the clock must not run back
        if fate == "claim":
            board.claim("ann")  # the oldest open task, whichever it is
        elif fate != "none":
            board.complete(f"t{i}") if fate == "done" else board.fail(f"t{i}")
            finished[f"t{i}"] = clock.now
    deliver_all([ra, rb])
    before = board.tasks()
    unfinished = [t for t in before if t not in finished]
    waited_on = {d for t in unfinished for d in depends[t]}
    expected = sorted(t for t, s in finished.items() if s < START + cutoff and t not in waited_on)

    assert board.prune(START + cutoff) == expected
    assert board.tasks() == {k: v for k, v in before.items() if k not in expected}
    assert sorted(raw(ra)) == sorted(set(before) - set(expected))
    deliver_all([ra, rb])
    assert other.tasks() == board.tasks() and raw(rb) == raw(ra)


# -- concurrency ------------------------------------------------------------------------


def finished_and_pruned_on_a_while_b_works_on() -> tuple[Clock, list[Replica], list[TaskBoard]]:
    """Three replicas: a and c see "t" done by cy (a re-claim after bob's lease ran out);
    a prunes it. b, cut off, still holds bob's claim and has heard of neither."""
    clock = Clock(START)
    nodes = cluster(3, clock, LEASE)
    (ra, a), (rb, b), (rc, c) = nodes
    a.post("t")
    deliver_all([ra, rb, rc])
    assert b.claim("bob") is not None
    deliver_all([ra, rb, rc])
    clock.now += LEASE + 1
    assert c.claim("cy") is not None and c.complete("t", "cy's answer")
    rb.inbox.clear()  # the partition: b gets c's writes only later, from the prune's side
    ra.deliver()
    ra.deliver()
    clock.now += 1
    assert a.prune(clock.now) == ["t"]
    return clock, [ra, rb, rc], [a, b, c]


@given(order=st.lists(st.integers(0, 9), max_size=6), heartbeat=st.booleans())
def test_a_write_concurrent_with_the_prune_leaves_the_task_gone_from_every_view(
    order: list[int], heartbeat: bool
) -> None:
    _, replicas, (a, b, c) = finished_and_pruned_on_a_while_b_works_on()
    _, rb, rc = replicas
    if heartbeat:
        assert b.heartbeat("t")  # bob has not heard he lost the task
    else:
        assert b.complete("t", "bob's late answer")  # nor that it is done
    assert b.task("t").status is (Status.CLAIMED if heartbeat else Status.DONE)
    rb.inbox.append(encode(rc.state))  # what b missed from c, as a full state
    deliver_all(replicas, order)
    for board in (a, b, c):
        assert board.tasks() == {}
    fragments = [raw(replica) for replica in replicas]
    assert all(fragment == fragments[0] for fragment in fragments)
    assert list(fragments[0]) == ["t"] and SPEC not in fragments[0]["t"]  # a few records


def test_a_pruned_id_posted_again_is_a_new_task_even_where_a_fragment_was_left() -> None:
    clock, replicas, (a, b, c) = finished_and_pruned_on_a_while_b_works_on()
    ra, rb, rc = replicas
    assert b.complete("t", "bob's late answer")
    rb.inbox.append(encode(rc.state))
    deliver_all(replicas)
    assert COMPLETIONS in raw(ra)["t"]  # bob's late completion, with no spec
    clock.now += 1
    a.post("t", "again")
    deliver_all(replicas)
    for board in (a, b, c):
        task = board.task("t")
        assert (task.status, task.payload, task.completions, task.attempts) == (
            Status.OPEN,
            "again",
            0,
            0,
        )
    claimed = c.claim("cy")
    assert claimed is not None and claimed.claim is not None and claimed.claim.round == 1


def test_a_late_write_still_in_flight_when_the_id_is_posted_again_shows_on_the_new_task() -> None:
    """The limit of a re-post: records of the old task merged after it join the new one."""
    clock, replicas, (a, b, _) = finished_and_pruned_on_a_while_b_works_on()
    ra, rb, _ = replicas
    assert b.complete("t", "bob's late answer")
    late, rb.inbox[:] = list(ra.inbox), []
    ra.inbox.clear()
    clock.now += 1
    a.post("t", "again")
    ra.inbox.extend(late)
    deliver_all(replicas)
    assert a.task("t").result == "bob's late answer"


def test_a_dependent_posted_concurrently_with_the_prune_or_after_it_stays_blocked() -> None:
    clock = Clock(START)
    (ra, a), (rb, b) = cluster(2, clock, LEASE)
    a.post("stage-1")
    assert a.complete("stage-1")
    deliver_all([ra, rb])
    clock.now += 1
    assert a.prune(clock.now) == ["stage-1"]
    b.post("stage-2", depends_on=["stage-1"])  # b has not heard of the prune
    assert b.task("stage-2").status is Status.OPEN
    deliver_all([ra, rb])
    a.post("stage-3", depends_on=["stage-1"])
    deliver_all([ra, rb])
    for board in (a, b):
        assert board.task("stage-2").status is Status.BLOCKED
        assert board.task("stage-3").status is Status.BLOCKED
        assert "stage-1" not in board.tasks()
    assert a.tasks() == b.tasks() and a.claim("ann") is None
