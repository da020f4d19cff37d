"""The task board's claim semantics under concurrency, on replicas with no network.

Boards sit on ``tests.workflow.replicas`` (bare ORMaps behind handles), so
hypothesis picks every interleaving of writes and every delivery order of
their deltas. What must hold: concurrent claims on any number of replicas
converge on one winner, the same everywhere whatever the order; a loser sees
it lost as soon as it merges; an expired lease makes a task claimable again
and the re-claim wins; dependencies gate claims; the first completion is the
result everywhere and beats a failure and a re-claim. Hypothesis runs
derandomized (``tests/conftest.py``) and prints a failing example.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agentsync.claims import Claim, Status, first, read_board, winner, would_cycle
from agentsync.workflow import TaskBoard
from tests.workflow.replicas import Clock, cluster, deliver_all

LEASE = 10.0
AGENTS = st.sampled_from(["ann", "bob", "cy"])
CLAIMS = st.builds(
    Claim,
    round=st.integers(1, 4),
    stamp=st.integers(0, 5),
    agent=AGENTS,
    node=st.sampled_from(["n1", "n2"]),
    expires=st.floats(0, 100),
)


def views(boards: list[TaskBoard]) -> list[dict[str, Any]]:
    return [board.tasks() for board in boards]


# -- the pure rules --------------------------------------------------------------


@given(st.lists(CLAIMS, min_size=1, unique_by=lambda c: c.key), st.randoms(use_true_random=False))
def test_the_winner_is_the_earliest_claim_of_the_highest_round_in_any_order(
    claims: list[Claim], rng: Any
) -> None:
    shuffled = list(claims)
    rng.shuffle(shuffled)
    best = winner(claims)
    assert best is not None and winner(shuffled) == best
    assert best.round == max(c.round for c in claims)
    assert all(
        (best.stamp, best.agent, best.node) <= (c.stamp, c.agent, c.node)
        for c in claims
        if c.round == best.round
    )
    assert winner([]) is None and first([]) is None


JUNK = st.recursive(
    st.none() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(
            st.text(max_size=3) | st.tuples(st.integers(), st.text()), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=3) | st.integers(), JUNK, max_size=4), st.floats(0, 1e3))
def test_malformed_records_from_peers_are_skipped_never_raised_on(raw: Any, now: float) -> None:
    for task in read_board(raw, now).values():
        assert isinstance(task.id, str) and task.status in Status
        assert math.isfinite(task.progress)


def test_a_dependency_cycle_is_found_through_every_path() -> None:
    depends = {"b": ("a",), "c": ("b", "x")}
    assert would_cycle(depends, "a", ["c"])
    assert would_cycle(depends, "a", ["a"])
    assert not would_cycle(depends, "d", ["c"])


# -- boards on replicas ------------------------------------------------------------


@given(
    n=st.integers(2, 5),
    claimers=st.data(),
    order=st.lists(st.integers(0, 20), max_size=12),
    tick=st.floats(0, 1),
)
def test_concurrent_claims_converge_on_one_winner_whatever_the_delivery_order(
    n: int, claimers: st.DataObject, order: list[int], tick: float
) -> None:
    clock = Clock()
    nodes = cluster(n, clock, LEASE)
    replicas, boards = [r for r, _ in nodes], [b for _, b in nodes]
    boards[0].post("t", {"q": "why"})
    deliver_all(replicas)
    who = claimers.draw(st.sets(st.integers(0, n - 1), min_size=2), label="claimers")
    for i in sorted(who):  # concurrent: nobody has merged another's claim
        clock.now += tick
        claimed = boards[i].claim(f"agent-{i}")
        assert claimed is not None and boards[i].owns("t", f"agent-{i}")
    deliver_all(replicas, order)
    seen = views(boards)
    assert all(view == seen[0] for view in seen)
    claim = seen[0]["t"].claim
    assert claim is not None and seen[0]["t"].attempts == len(who)
    owners = [i for i in range(n) if boards[i].owns("t")]
    assert owners == [int(claim.agent.removeprefix("agent-"))]
    for i in who - set(owners):  # the losers learn it from the merge alone
        assert not boards[i].owns("t", f"agent-{i}")
        assert not boards[i].heartbeat("t")
        assert not boards[i].progress("t", 0.5)
    assert boards[owners[0]].heartbeat("t")


def test_a_loser_learns_it_lost_as_soon_as_it_merges_the_winning_claim() -> None:
    clock = Clock()
    (_, a), (rb, b) = cluster(2, clock, LEASE)
    a.post("t")
    rb.deliver()
    a.claim("ann")
    clock.now += 0.001
    b.claim("bob")  # later stamp: loses
    assert b.owns("t") and b.heartbeat("t")
    rb.deliver()  # ann's claim only (bob's heartbeat goes the other way)
    assert not b.owns("t") and not b.heartbeat("t") and b.task("t").claimant == "ann"


def test_an_expired_lease_makes_the_task_claimable_and_the_reclaim_wins_over_a_renewal() -> None:
    clock = Clock()
    (ra, a), (rb, b) = cluster(2, clock, LEASE)
    a.post("t")
    deliver_all([ra, rb])
    assert a.claim("ann") is not None
    deliver_all([ra, rb])
    assert b.claim("bob") is None and b.task("t").status is Status.CLAIMED
    clock.now += LEASE + 0.1
    assert b.task("t").status is Status.OPEN
    again = b.claim("bob")
    assert again is not None and again.claim is not None and again.claim.round == 2
    assert a.heartbeat("t")  # concurrent with the re-claim: ann has not heard of it
    deliver_all([ra, rb])
    assert a.tasks() == b.tasks() and a.task("t").claimant == "bob"
    assert not a.heartbeat("t") and b.owns("t", "bob") and a.task("t").attempts == 2


def test_a_complete_racing_a_reclaim_wins_and_the_reclaimer_stops() -> None:
    clock = Clock()
    (ra, a), (rb, b) = cluster(2, clock, LEASE)
    a.post("t")
    deliver_all([ra, rb])
    a.claim("ann")
    deliver_all([ra, rb])
    clock.now += LEASE + 1
    b.claim("bob")
    assert a.complete("t", "ann's answer")  # late, but done: ann had not heard of bob
    deliver_all([ra, rb])
    for board in (a, b):
        task = board.task("t")
        assert task.status is Status.DONE and task.result == "ann's answer"
        assert task.finished_by == "ann" and task.progress == 1.0
    assert not b.owns("t") and not b.progress("t", 0.5)
    assert not b.complete("t", "bob's answer")  # finished here: nothing written
    assert b.task("t").completions == 1


@given(results=st.lists(st.text(max_size=4), min_size=2, max_size=4), fails=st.booleans())
def test_concurrent_completions_keep_one_result_everywhere_and_a_completion_beats_a_failure(
    results: list[str], fails: bool
) -> None:
    clock = Clock()
    nodes = cluster(len(results) + 1, clock, LEASE)
    replicas, boards = [r for r, _ in nodes], [b for _, b in nodes]
    boards[0].post("t")
    deliver_all(replicas)
    for board, result in zip(boards, results, strict=False):
        clock.now += 1  # so the stamps order the completions as they were made
        assert board.complete("t", result)
    if fails:
        assert boards[-1].fail("t", "timeout")
    deliver_all(list(reversed(replicas)))
    seen = views(boards)
    assert all(view == seen[0] for view in seen)
    task = seen[0]["t"]
    assert task.status is Status.DONE and task.reason is None
    assert task.completions == len(results) and task.finished_by == "node-0"
    assert task.result == results[0]


@given(st.data())
def test_dependencies_gate_claims_and_every_task_runs_after_its_dependencies(
    data: st.DataObject,
) -> None:
    clock = Clock()
    ((_, board),) = cluster(1, clock, LEASE)
    count = data.draw(st.integers(1, 8))
    for i in range(count):
        deps = data.draw(st.sets(st.integers(0, i - 1)) if i else st.just(set()))
        board.post(f"t{i}", i, [f"t{d}" for d in sorted(deps)])
    done: list[str] = []
    while (task := board.claim("ann")) is not None:
        assert set(task.depends_on) <= set(done)
        assert board.complete(task.id, task.payload)
        done.append(task.id)
    assert sorted(done) == sorted(f"t{i}" for i in range(count))
    assert all(task.status is Status.DONE for task in board.tasks().values())


def test_a_failed_dependency_blocks_its_dependents_for_good() -> None:
    ((_, board),) = cluster(1, Clock(), LEASE)
    board.post("a")
    board.post("b", depends_on=["a"])
    assert board.claim("ann") is not None and board.fail("a", "no data")
    assert board.task("a").reason == "no data" and board.task("b").status is Status.BLOCKED
    assert board.claim("ann") is None


def test_finished_at_is_the_stamp_of_the_record_that_finished_the_task() -> None:
    clock = Clock(2_000.0)
    ((_, board),) = cluster(1, clock, LEASE)
    board.post("ok")
    board.post("bad")
    assert board.task("ok").finished_at is None
    assert board.fail("bad", "no data")
    clock.now += 1
    assert board.complete("ok", 1)
    failed, done = board.task("bad").finished_at, board.task("ok").finished_at
    assert failed is not None and done is not None  # stamps: the clock's ns, made monotonic
    assert (failed // 10**9, done // 10**9) == (2_000, 2_001)


def test_a_completion_beating_an_earlier_failure_sets_finished_at() -> None:
    clock = Clock(2_000.0)
    (ra, a), (rb, b) = cluster(2, clock, LEASE)
    a.post("t")
    deliver_all([ra, rb])
    assert a.fail("t", "timeout")
    clock.now += 1
    assert b.complete("t", "late but done")
    deliver_all([ra, rb])
    assert a.task("t") == b.task("t")
    finished_at = a.task("t").finished_at
    assert a.task("t").status is Status.DONE
    assert finished_at is not None and finished_at // 10**9 == 2_001  # not the failure's


# -- any interleaving -----------------------------------------------------------------


class BoardMachine(RuleBasedStateMachine):
    """2-4 replicas post, claim, renew, report, complete, fail and prune while time runs
    and deltas arrive in any order; whenever all is delivered, every view agrees and each
    unfinished claimed task has exactly one owner."""

    @initialize(n=st.integers(2, 4))
    def start(self, n: int) -> None:
        self.clock = Clock()
        nodes = cluster(n, self.clock, LEASE)
        self.replicas = [r for r, _ in nodes]
        self.boards = [b for _, b in nodes]

    @rule(i=st.integers(0, 3), task=st.integers(0, 4), deps=st.sets(st.integers(0, 4)))
    def post(self, i: int, task: int, deps: set[int]) -> None:
        board = self.boards[i % len(self.boards)]
        try:
            board.post(f"t{task}", task, [f"t{d}" for d in sorted(deps) if d < task])
        except ValueError:
            assert f"t{task}" in board.tasks()

    @rule(i=st.integers(0, 3))
    def claim(self, i: int) -> None:
        board = self.boards[i % len(self.boards)]
        before = board.tasks()
        task = board.claim(f"agent-{i % len(self.boards)}")
        if task is None:
            assert all(t.status is not Status.OPEN for t in before.values())
            return
        seen = before[task.id]
        assert seen.status is Status.OPEN  # unclaimed, or its lease ran out
        assert all(before[d].status is Status.DONE for d in seen.depends_on)
        assert task.claim is not None and task.status is Status.CLAIMED
        assert task.claim.round == (1 if seen.claim is None else seen.claim.round + 1)

    @rule(i=st.integers(0, 3), task=st.integers(0, 4), what=st.sampled_from(["hb", "pr"]))
    def renew(self, i: int, task: int, what: str) -> None:
        board = self.boards[i % len(self.boards)]
        owned = board.owns(f"t{task}")
        done = board.heartbeat(f"t{task}") if what == "hb" else board.progress(f"t{task}", 0.5)
        assert done == owned

    @rule(i=st.integers(0, 3), task=st.integers(0, 4), ok=st.booleans())
    def finish(self, i: int, task: int, ok: bool) -> None:
        board = self.boards[i % len(self.boards)]
        if f"t{task}" not in board.tasks():
            return
        was = board.task(f"t{task}").finished
        written = board.complete(f"t{task}", i) if ok else board.fail(f"t{task}", i)
        assert not (was and written)

    @rule(i=st.integers(0, 3), ago=st.sampled_from([-1.0, LEASE, math.inf]))
    def prune(self, i: int, ago: float) -> None:
        board = self.boards[i % len(self.boards)]
        before = board.tasks()
        cutoff = self.clock.now - ago
        pruned = board.prune(cutoff)
        waited_on = {d for task in before.values() if not task.finished for d in task.depends_on}
        assert pruned == sorted(
            task.id
            for task in before.values()
            if task.finished_at is not None
            and task.finished_at < cutoff * 1e9
            and task.id not in waited_on
        )
        assert board.tasks() == {k: v for k, v in before.items() if k not in pruned}

    @rule(dt=st.sampled_from([0.0, 0.5, LEASE / 2, LEASE + 1]))
    def tick(self, dt: float) -> None:
        self.clock.now += dt

    @precondition(lambda self: any(r.inbox for r in self.replicas))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        replica = data.draw(st.sampled_from([r for r in self.replicas if r.inbox]))
        replica.deliver(data.draw(st.integers(0, len(replica.inbox) - 1)))

    @rule(order=st.lists(st.integers(0, 30), max_size=8))
    def sync_all(self, order: list[int]) -> None:
        deliver_all(self.replicas, order)
        self.check_agreement()

    @invariant()
    def owners_win_locally(self) -> None:
        for board in self.boards:
            for task in board.tasks().values():
                if board.owns(task.id):
                    assert task.claim is not None and not task.finished

    def check_agreement(self) -> None:
        seen = views(self.boards)
        assert all(view == seen[0] for view in seen)
        for task in seen[0].values():
            owners = sum(board.owns(task.id) for board in self.boards)
            assert owners == (0 if task.finished or task.claim is None else 1)

    def teardown(self) -> None:
        if hasattr(self, "replicas"):
            deliver_all(self.replicas)
            self.check_agreement()


TestBoardMachine = BoardMachine.TestCase
TestBoardMachine.settings = settings(stateful_step_count=40, max_examples=150)
