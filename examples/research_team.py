"""A research team on a shared task board: a planner, three workers, and a crash.

Run: python examples/research_team.py

Four agents, each with its own Node (here in one process, on loopback), share
a ``TaskBoard``. The planner posts a job as tasks with dependencies (three
searches, a summary of each, then a report) and watches the board. Workers
claim what is ready, report progress while they renew their lease, and
complete tasks with results that later tasks read. Worker w2 crashes in the
middle of its second task: nobody tells anyone, its lease just runs out, and another
worker re-claims the task. No LLM is called: workers do stand-in work.
"""

from __future__ import annotations

import asyncio
import sys
import time

from agentsync import Node
from agentsync.workflow import Status, TaskBoard, TaskEvent

LEASE = 1.0  # seconds a claim holds without a heartbeat; real agents use far longer
GOSSIP = 0.05
DEADLINE_S = 30.0
TOPICS = ("papers", "code", "news")
START = time.monotonic()


def say(who: str, what: str) -> None:
    print(f"{time.monotonic() - START:5.2f}s  {who:<8} {what}", flush=True)


def plan(board: TaskBoard) -> None:
    for topic in TOPICS:
        board.post(f"search:{topic}", {"query": f"CRDTs for agents ({topic})"})
        board.post(f"summarize:{topic}", {"topic": topic}, depends_on=[f"search:{topic}"])
    board.post("report", {"title": "State sharing for agents"},
               depends_on=[f"summarize:{topic}" for topic in TOPICS])  # fmt: skip


def stand_in_work(board: TaskBoard, task_id: str) -> str:
    """What an LLM call would produce, made from the results the task depends on."""
    inputs = [str(board.task(dependency).result) for dependency in board.task(task_id).depends_on]
    return f"{task_id}({'; '.join(inputs)})" if inputs else f"{task_id}: 3 sources"


def done(board: TaskBoard) -> bool:
    report = board.tasks().get("report")  # None until the plan reaches this node
    return report is not None and report.status is Status.DONE


async def worker(node: Node, board: TaskBoard, crash_after: int | None = None) -> None:
    """Claim, work in steps (renewing the lease), complete. With ``crash_after``, the
    worker dies in the middle of the next task it holds after that many completions."""
    completed = 0
    while not done(board):
        task = board.claim(node.node_id)
        if task is None:
            await asyncio.sleep(GOSSIP)
            continue
        for step in range(1, 4):
            await asyncio.sleep(0.1)
            if not (board.heartbeat(task.id) and board.progress(task.id, step / 3)):
                say(node.node_id, f"lost {task.id} to another claim; moves on")
                break
            if completed == crash_after and step == 2:
                say(node.node_id, f"crashes while working on {task.id}")
                await node.stop()  # gone: no more heartbeats, no goodbye
                return
        else:
            board.complete(task.id, stand_in_work(board, task.id))
            completed += 1


def narrate(event: TaskEvent) -> None:
    """The planner's view of one change on the board."""
    task, before = event.task, event.before
    if event.kind == "claimed" and before is not None and before.claim is not None:
        old = before.claim
        assert task.claim is not None
        why = "its lease ran out" if task.claim.round > old.round else "a concurrent claim won"
        say("planner", f"sees {task.claimant} take {task.id} from {old.agent} ({why})")
    elif event.kind == "claimed":
        say("planner", f"sees {task.claimant} claim {task.id}")
    elif event.kind == "done":
        say("planner", f"sees {task.id} done by {task.finished_by}: {task.result}")
    elif event.kind == "ready":
        say("planner", f"sees {task.id} ready (its inputs are done)")


async def main() -> int:
    async with Node("planner", gossip_interval=GOSSIP) as planner:
        board = TaskBoard(planner, lease=LEASE)
        workers = [Node(f"w{i}", peers=[planner.url], gossip_interval=GOSSIP) for i in (1, 2, 3)]
        for node in workers:
            await node.start()
        boards = [TaskBoard(node, lease=LEASE) for node in workers]

        async def watch() -> None:
            async for event in board.watch():
                narrate(event)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)  # the watch starts before the first post
        plan(board)
        say("planner", f"posted {len(board.tasks())} tasks; lease {LEASE:g} s")
        team = [worker(node, b, crash_after=1 if node.node_id == "w2" else None)
                for node, b in zip(workers, boards, strict=True)]  # fmt: skip
        try:
            await asyncio.wait_for(asyncio.gather(*team), DEADLINE_S)
        except asyncio.TimeoutError:
            say("planner", "gave up waiting for the report")
            return 1
        finally:
            watcher.cancel()
            for node in workers:
                await node.stop()
        tasks = board.tasks()
        reclaimed = sorted(t.id for t in tasks.values() if t.claim and t.claim.round > 1)
        say("planner", f"report: {tasks['report'].result}")
        say(
            "planner",
            f"re-claimed after the crash: {', '.join(reclaimed) or 'none'}; "
            f"duplicate completions: {sum(t.completions - 1 for t in tasks.values())}",
        )
        return 0 if all(task.status is Status.DONE for task in tasks.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
