"""A task board for agents, with no coordinator: ``TaskBoard`` on a Node's handles.

A planner posts tasks (with dependencies), workers claim them, report
progress, renew their lease and complete or fail them; everyone reads the
same board once gossip has carried the writes. The board is an ORMap under
one top-level name, a nested ORMap per task (the records are listed in
``agentsync.claims``, which holds the rules that resolve them).

What it guarantees, honestly (``docs/workflow.md``):

- **At-least-once, not exactly-once.** A claim is a local write: two agents
  that claim the same task before either hears of the other's claim both
  start it. Once they merge, every replica picks the same winner (the
  higher round, then the earlier stamp, agent, node) and the loser sees it
  lost (``owns`` and ``heartbeat`` return False, ``watch`` reports a
  ``claimed`` event), so duplicate work lasts about one gossip latency. A
  claimant that stops renewing loses the task when its lease ends, and
  another agent re-runs it: a slow but live claimant also keeps running
  until it next checks. Exactly-once would need consensus, which
  agentsync does not do.
- **One result per task.** Every completion is kept, and the first by
  stamp, agent and node is the result on every replica. A completion beats
  a failure and a later claim.
- **Under a partition** each side goes on alone: a task whose claimant is on
  the other side is re-claimed here once its lease ends, so both sides may
  run it; when they meet, the results merge as above.
- **A board is bounded by ``prune``**, which removes finished tasks that no
  unfinished task waits on. A write to a pruned task made concurrently
  elsewhere survives as records no view shows; a task depending on a pruned
  id stays blocked.
- Leases compare wall clocks of different machines: a lease ends early or
  late by the clock skew between claimer and reader. Keep the lease well
  above the skew and the gossip latency, and renew it a few times per lease.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from agentsync.claims import (
    CLAIMS,
    COMPLETIONS,
    FAILURES,
    PROGRESS,
    SPEC,
    Claim,
    EventKind,
    Status,
    Task,
    event_kind,
    read_board,
    would_cycle,
)
from agentsync.crdt import HybridLogicalClock
from agentsync.handles import LWWMapHandle, MapHandle
from agentsync.node import Change

DEFAULT_LEASE_S = 30.0
"""How long a claim holds without a heartbeat."""


class Host(Protocol):
    """What the board needs of a Node: its id, a map handle, its changes, and batches
    (so that a prune's removals notify and push once)."""

    @property
    def node_id(self) -> str: ...

    def map(self, key: Any) -> MapHandle: ...

    def changes(self) -> AsyncIterator[Change]: ...

    def batch(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A change of one task, as ``TaskBoard.watch`` reports it.

    ``before`` is the task's view before the change (None when ``posted``);
    for ``pruned``, the task is gone and ``task`` is its last view too.
    """

    kind: EventKind
    task: Task
    before: Task | None


class TaskBoard:
    """A shared board of tasks on ``node``, under the top-level ``name``.

    ``lease`` is how long a claim holds without ``heartbeat`` (seconds);
    ``clock`` gives the time in seconds (``time.time``; inject one in tests).
    Agent ids name who works: keep them unique across the board. Thread-safe
    like the Node.
    """

    def __init__(
        self,
        node: Host,
        name: str = "tasks",
        *,
        lease: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not lease > 0:
            raise ValueError("lease must be > 0 seconds")
        self._node = node
        self._name = name
        self._root = node.map(name)
        self.lease = lease
        self._clock = clock
        self._hlc = HybridLogicalClock(lambda: int(clock() * 1e9))
        self._lock = threading.Lock()
        self._mine: dict[str, Claim] = {}  # task id -> the claim this board made on it

    @property
    def name(self) -> str:
        return self._name

    def tasks(self) -> dict[str, Task]:
        """Every posted task as this replica sees it now."""
        return read_board(self._root.value, self._clock())

    def task(self, task_id: str) -> Task:
        """One task as this replica sees it now; KeyError if it is not here."""
        return self.tasks()[task_id]

    def post(self, task_id: str, payload: object = None, depends_on: Iterable[str] = ()) -> None:
        """Post a task that becomes claimable once every task in ``depends_on`` is done.

        ValueError if ``task_id`` is already posted here or would close a
        dependency cycle. Two replicas posting the same id concurrently: the
        later post (last-writer-wins) is the task. Posting a pruned id makes a
        new task: what this replica holds of the old one (writes made
        concurrently with the prune) is removed first.
        """
        if type(task_id) is not str or not task_id:
            raise ValueError("a task id must be a non-empty str")
        after = tuple(depends_on)
        if not all(type(dependency) is str for dependency in after):
            raise TypeError("depends_on must hold task ids (str)")
        with self._lock, self._node.batch():
            tasks = self.tasks()
            if task_id in tasks:
                raise ValueError(f"task {task_id!r} is already posted")
            known = {tid: task.depends_on for tid, task in tasks.items()}
            if would_cycle(known, task_id, after):
                raise ValueError(f"task {task_id!r} depending on {after} closes a cycle")
            spec = {"payload": payload, "depends_on": after, "posted": self._hlc.now()}
            if task_id in self._root:  # records without a spec: the remains of a pruned task
                self._root.remove(task_id)
            self._root.map(task_id).register(SPEC).set(spec)

    def prune(self, finished_before: float) -> list[str]:
        """Remove the tasks finished here before ``finished_before`` that no unfinished task
        depends on, so that a long-running board stays bounded; the removed ids, sorted.

        ``finished_before`` is in seconds on the board's clock (compared with
        ``Task.finished_at``, the finisher's stamp). A removal is observed-remove,
        update-wins: a write to a pruned task made concurrently elsewhere (a late
        completion, a heartbeat) survives as a few records without a spec, which no
        view shows, and a concurrent post of the same id is that new task. A task
        that depends on a pruned id stays blocked, whenever it is posted: prune
        only what no future task will depend on, such as a finished job stage.
        """
        if isinstance(finished_before, bool) or not isinstance(finished_before, (int, float)):
            raise TypeError(
                f"finished_before must be a number of seconds, not {type(finished_before).__name__}"
            )
        if math.isnan(finished_before):
            raise ValueError("finished_before must be a number of seconds, not NaN")
        cutoff_ns = finished_before * 1e9
        with self._lock, self._node.batch():
            tasks = self.tasks()
            waited_on = {
                dep for task in tasks.values() if not task.finished for dep in task.depends_on
            }
            prunable = sorted(
                task_id
                for task_id, task in tasks.items()
                if task.finished_at is not None
                and task.finished_at < cutoff_ns
                and task_id not in waited_on
            )
            removed = []
            for task_id in prunable:
                self._mine.pop(task_id, None)
                try:
                    self._root.remove(task_id)
                except KeyError:  # a peer's prune of it merged since the read: gone already
                    continue
                removed.append(task_id)
            return removed

    def claim(self, agent_id: str) -> Task | None:
        """Claim the oldest open task for ``agent_id``; None if none is open here.

        The claim wins here at once; a concurrent claim elsewhere may still
        beat it once merged, so check ``owns`` (or ``heartbeat``) as you work.
        """
        if type(agent_id) is not str or not agent_id:
            raise ValueError("an agent id must be a non-empty str")
        with self._lock:
            now = self._clock()
            tasks = self.tasks()
            ready = [task for task in tasks.values() if task.status is Status.OPEN]
            if not ready:
                return None
            task = min(ready, key=lambda t: (t.posted, t.id))
            round_ = 1 if task.claim is None else task.claim.round + 1
            claim = Claim(round_, self._hlc.now(), agent_id, self._node.node_id, now + self.lease)
            self._claims(task.id)[claim.key] = claim.expires
            self._mine[task.id] = claim
            return self.task(task.id)

    def owns(self, task_id: str, agent_id: str | None = None) -> bool:
        """Whether the task is unfinished and its winning claim is ``agent_id``'s
        (or, without one, this board's): False once a merged claim beat it."""
        if agent_id is None:
            return self._my_claim(task_id) is not None
        claim = self._winning(task_id)
        return claim is not None and claim.agent == agent_id

    def heartbeat(self, task_id: str) -> bool:
        """Renew this board's lease on the task if it still owns it; whether it does."""
        mine = self._my_claim(task_id)
        if mine is None:
            return False
        self._claims(task_id)[mine.key] = self._clock() + self.lease
        return True

    def progress(self, task_id: str, fraction: float) -> bool:
        """Report progress (0 to 1) under this board's claim; False (nothing written)
        if it does not own the task."""
        if type(fraction) not in (int, float) or not 0 <= fraction <= 1:
            raise ValueError("fraction must be a number from 0 to 1")
        mine = self._my_claim(task_id)
        if mine is None:
            return False
        self._root.map(task_id).lwwmap(PROGRESS)[mine.key] = float(fraction)
        return True

    def complete(self, task_id: str, result: object = None, *, agent_id: str | None = None) -> bool:
        """Record a result; whether it is the task's result here now.

        Written whether or not this board still owns the task (the work is
        done either way) unless the task is already finished here: then
        nothing is written and it returns False. ``agent_id`` defaults to
        the agent of this board's claim on the task, else the node id.
        KeyError if the task is not posted here.
        """
        return self._finish(task_id, COMPLETIONS, result, agent_id)

    def fail(self, task_id: str, reason: object = None, *, agent_id: str | None = None) -> bool:
        """Mark the task failed for good (its dependents stay blocked), unless it is
        finished here; whether it is failed here now. A completion beats a failure."""
        return self._finish(task_id, FAILURES, reason, agent_id)

    async def watch(self) -> AsyncIterator[TaskEvent]:
        """Yield an event for every task whose view changes, from now on (on the node's loop).

        Built on ``node.changes()`` and a diff of views, so nothing is missed if
        changes are dropped. A lease that runs out is seen at the next change. A
        task that leaves the board (pruned here or by a peer) yields a ``pruned``
        event after the others, its last view as both ``task`` and ``before``.
        """
        before = self.tasks()
        async for change in self._node.changes():
            if self._name not in change.names:
                continue
            after = self.tasks()
            for task_id, task in after.items():
                kind = event_kind(before.get(task_id), task)
                if kind is not None:
                    yield TaskEvent(kind, task, before.get(task_id))
            for task_id in sorted(before.keys() - after.keys()):
                yield TaskEvent("pruned", before[task_id], before[task_id])
            before = after

    def _claims(self, task_id: str) -> LWWMapHandle:
        return self._root.map(task_id).lwwmap(CLAIMS)

    def _winning(self, task_id: str) -> Claim | None:
        """The winning claim of the task; None if it is not posted here, unclaimed or finished."""
        task = self.tasks().get(task_id)
        return None if task is None or task.finished else task.claim

    def _my_claim(self, task_id: str) -> Claim | None:
        """This board's claim on the task while it wins; a claim that lost is forgotten
        (claims are removed only with their task, by prune, so it cannot win again)."""
        with self._lock:
            mine = self._mine.get(task_id)
        if mine is None:
            return None
        claim = self._winning(task_id)
        if claim is None or claim.key != mine.key:
            with self._lock:
                self._mine.pop(task_id, None)
            return None
        return mine

    def _finish(self, task_id: str, field: str, value: object, agent_id: str | None) -> bool:
        with self._lock:
            task = self.tasks().get(task_id)
            if task is None:
                raise KeyError(task_id)
            if task.finished:
                return False
            mine = self._mine.pop(task_id, None)
            agent = agent_id or (mine.agent if mine is not None else self._node.node_id)
            key = (self._hlc.now(), agent, self._node.node_id)
            self._root.map(task_id).lwwmap(field)[key] = value
            now = self.task(task_id)
            wanted = Status.DONE if field == COMPLETIONS else Status.FAILED
            return now.status is wanted and now.finished_by == agent


__all__ = ["DEFAULT_LEASE_S", "Host", "Status", "Task", "TaskBoard", "TaskEvent"]
