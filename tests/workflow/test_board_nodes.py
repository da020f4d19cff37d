"""The task board on real nodes over loopback HTTP, and a worker killed with SIGKILL.

Every wait polls with a deadline (``tests.node.helpers.eventually``); leases
are short (1 s) and gossip fast (50 ms), so each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from pathlib import Path

from agentsync import Node
from agentsync.workflow import Status, TaskBoard, TaskEvent
from tests.node.helpers import eventually, run, stop_all

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0
GOSSIP = 0.05
LINE_DEADLINE_S = 20.0
"""How long the child may take to start and print a claim (imports on a busy machine)."""
WORK_DEADLINE_S = 30.0
"""How long the workers may take to finish the board (about 2 s when the machine is idle)."""


async def collect(board: TaskBoard, into: list[TaskEvent]) -> None:
    async for event in board.watch():  # until cancelled, so no list.extend
        into.append(event)  # noqa: PERF401


async def exchange(a: Node, b: Node, *, keep: bool = False) -> None:
    """One push-pull exchange between ``a`` and ``b``; then neither gossips with the other
    unless ``keep``, so that writes stay local until the next exchange. A gossip round or
    probe that b began once it heard of a is let finish first: it would carry a's next
    writes, and make a learn of b again."""
    a.add_peer(b.url)
    await a.sync_now()
    if not keep:
        await eventually(
            lambda: a.url not in b._inflight and b.url not in a._inflight,
            "no exchange between them in flight",
        )
        a.remove_peer(b.url)  # no await since the check: no exchange can have begun
        b.remove_peer(a.url)


async def two_boards() -> tuple[Node, Node, TaskBoard, TaskBoard]:
    """Nodes a and b, started and not peers yet, and a board on each (ann's, bob's)."""
    a, b = Node("a", gossip_interval=GOSSIP), Node("b", gossip_interval=GOSSIP)
    await a.start()
    await b.start()
    return a, b, TaskBoard(a, lease=LEASE), TaskBoard(b, lease=LEASE)


def test_watch_tells_a_loser_it_lost_and_reports_the_life_of_a_task() -> None:
    async def main() -> None:
        a, b, ann, bob = await two_boards()
        events: list[TaskEvent] = []
        watcher = asyncio.create_task(collect(bob, events))
        try:
            await asyncio.sleep(0)  # the watch takes its first view
            ann.post("t", "the question")
            await exchange(a, b)
            assert ann.claim("ann") is not None
            await asyncio.sleep(0.01)  # a later stamp: bob's concurrent claim loses
            assert bob.claim("bob") is not None and bob.owns("t", "bob")
            bob.post("u", depends_on=["t"])
            await exchange(a, b)
            assert not bob.owns("t") and not bob.heartbeat("t") and bob.task("t").attempts == 2
            assert ann.owns("t", "ann") and ann.progress("t", 0.5) and ann.complete("t", 42)
            await exchange(a, b, keep=True)
            await eventually(lambda: any(e.kind == "ready" for e in events), "u is ready at bob")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await stop_all([a, b])
        kinds = [(e.kind, e.task.id, e.task.claimant) for e in events]
        assert kinds == [
            ("posted", "t", None),
            ("claimed", "t", "bob"),
            ("posted", "u", None),
            ("claimed", "t", "ann"),  # bob lost: before.claimant is bob
            ("done", "t", "ann"),
            ("ready", "u", None),
        ], kinds
        lost = events[3].before
        assert lost is not None and lost.claimant == "bob"
        assert bob.task("t").result == 42 and bob.task("t").progress == 1.0

    run(main())


def test_watch_reports_a_task_pruned_here_or_by_a_peer_and_both_nodes_drop_it() -> None:
    async def main() -> None:
        a, b, ann, bob = await two_boards()
        here: list[TaskEvent] = []
        there: list[TaskEvent] = []
        watchers = [
            asyncio.create_task(collect(ann, here)),
            asyncio.create_task(collect(bob, there)),
        ]
        try:
            await asyncio.sleep(0)  # the watches take their first views
            ann.post("t")
            ann.post("u", depends_on=["t"])
            ann.post("later")  # stays, unfinished: a full state emptying a name goes unreported
            assert ann.complete("t", 42)
            await exchange(a, b)
            assert bob.task("u").status is Status.OPEN
            assert ann.prune(time.time() + 1) == []  # u waits on t
            assert bob.claim("bob") is not None and bob.complete("u", 43)
            await exchange(a, b, keep=True)
            assert ann.prune(time.time() + 1) == ["t", "u"]
            assert list(a.map("tasks").value) == ["later"]  # the records are gone
            await eventually(lambda: list(b.map("tasks").value) == ["later"], "b merges it")
            await eventually(
                lambda: all(sum(e.kind == "pruned" for e in x) == 2 for x in (here, there)),
                "both watches report the prune",
            )
        finally:
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await stop_all([a, b])
        for events in (here, there):
            pruned = [e for e in events if e.kind == "pruned"]
            assert [e.task.id for e in pruned] == ["t", "u"]
            assert all(e.task == e.before and e.task.status is Status.DONE for e in pruned)
            assert events[-2:] == pruned
        assert list(ann.tasks()) == list(bob.tasks()) == ["later"]

    run(main())


TASKS = [f"fetch-{i}" for i in range(6)]
DOOMED = "doomed"
DOOMED_CLAIMS = 2


def all_done(board: TaskBoard) -> bool:
    return all(task.status is Status.DONE for task in board.tasks().values())


async def work(
    board: TaskBoard, agent: str, ran: list[tuple[str, str]], rng: random.Random
) -> None:
    """A worker: claim, do stand-in work while renewing the lease, complete; stop when it
    loses the task (another claim won) and when every task is done."""
    while len(board.tasks()) < len(TASKS) + 1 or not all_done(board):
        task = board.claim(agent)
        if task is None:
            await asyncio.sleep(GOSSIP / 2)
            continue
        for step in range(4):
            await asyncio.sleep(rng.uniform(0.01, 0.04))
            if not board.progress(task.id, step / 4) or not board.heartbeat(task.id):
                break  # lost it: someone else runs it
        else:
            ran.append((task.id, agent))
            board.complete(task.id, f"{task.id} by {agent}")


def test_every_task_completes_once_in_the_result_map_when_a_worker_is_killed() -> None:
    seed = random.SystemRandom().randrange(1 << 32)
    print(f"worker timing seed {seed} (the kill point and the work's pace; not gossip timing)")
    rng = random.Random(seed)

    async def main() -> None:
        planner = Node("planner", gossip_interval=GOSSIP)
        await planner.start()
        board = TaskBoard(planner, lease=LEASE)
        for task_id in TASKS:
            board.post(task_id, {"url": f"https://example.org/{task_id}"})
        board.post("report", depends_on=TASKS)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.workflow.worker_child",
            planner.url, DOOMED, str(LEASE), str(DOOMED_CLAIMS),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        workers: list[Node] = []
        try:
            assert child.stdout is not None
            held = []
            for _ in range(DOOMED_CLAIMS):
                line = await asyncio.wait_for(child.stdout.readline(), LINE_DEADLINE_S)
                held.append(line.decode().removeprefix("claimed ").strip())
            await eventually(
                lambda: all(board.task(t).claimant == DOOMED for t in held),
                "the planner sees the doomed worker's claims",
            )
            workers = [Node(f"w{i}", peers=[planner.url], gossip_interval=GOSSIP) for i in range(2)]
            for node in workers:
                await node.start()
            boards = [TaskBoard(node, lease=LEASE) for node in workers]
            ran: list[tuple[str, str]] = []
            working = asyncio.gather(*(work(b, f"w{i}", ran, rng) for i, b in enumerate(boards)))
            await asyncio.sleep(rng.uniform(0, 0.5))  # the kill lands while the others work
            child.send_signal(signal.SIGKILL)  # mid-task: its leases run out, unrenewed
            await asyncio.wait_for(child.wait(), LINE_DEADLINE_S)
            await asyncio.wait_for(working, WORK_DEADLINE_S)
            everyone = [board, *boards]
            await eventually(
                lambda: all(all_done(b) and b.tasks() == board.tasks() for b in everyone),
                "every node sees every task done, alike",
            )
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
            await stop_all([planner, *workers])
        results = {task_id: task.result for task_id, task in board.tasks().items()}
        assert sorted(results) == sorted([*TASKS, "report"])
        for task_id, result in results.items():
            task = board.task(task_id)
            assert task.finished_by in ("w0", "w1") and (task_id, task.finished_by) in ran
            assert result == f"{task_id} by {task.finished_by}"
        for task_id in held:  # re-claimed after the lease ran out
            task = board.task(task_id)
            assert task.attempts >= 2 and task.claim is not None and task.claim.round >= 2
        duplicates = sum(board.task(t).completions - 1 for t in results)
        print(f"duplicate completions (at-least-once): {duplicates}; ran {ran}")

    run(main(), timeout=90.0)
