"""The pure core of the task board: what a task's replicated records mean at a time.

``agentsync.workflow.TaskBoard`` writes records into CRDTs and reads them
back as plain values; this module turns those values into ``Task`` views.
It does no I/O and has no clock (the time is passed in), so the rules that
every replica must apply alike are property-tested alone
(``tests/workflow/test_claims.py``).

The rules, each a pure function of the records, so every replica that
merged the same records reads the same views whatever order they came in:

- **Claims come in rounds.** A board claims in round ``r + 1`` only when
  the winner of round ``r`` (the highest round it has seen) has let its
  lease expire. The winning claim is the one of the highest round; within a
  round (claims made concurrently), the earliest stamp, then the agent id,
  then the node id.
- **The first completion is the result**, by stamp, agent and node. A board
  writes no completion or failure for a task it already sees finished, so
  the records a task collects are concurrent, and their stamps need no
  causal order: any total order is deterministic.
- **A completion beats a failure**: a task some agent finished is done,
  even if another agent's run of it failed.
- A task is **blocked** until every task it depends on is done (a missing
  or failed dependency blocks it for good).

Records from peers are data from outside: malformed ones are skipped, never
raised on.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from agentsync.crdt.values import Value

SPEC = "spec"
"""LWWRegister: {"payload": ..., "depends_on": (...), "posted": stamp}."""
CLAIMS = "claims"
"""LWWMap: claim key (round, stamp, agent, node) -> lease end (seconds on the claimer's clock)."""
PROGRESS = "progress"
"""LWWMap: claim key -> fraction reported under that claim."""
COMPLETIONS = "completions"
"""LWWMap: record key (stamp, agent, node) -> result."""
FAILURES = "failures"
"""LWWMap: record key (stamp, agent, node) -> reason."""

ClaimKey = tuple[int, int, str, str]
RecordKey = tuple[int, str, str]


class Status(str, Enum):
    """Where a task stands, as one replica sees it at one time."""

    BLOCKED = "blocked"
    """A dependency is not done (not posted yet, open, claimed or failed)."""
    OPEN = "open"
    """Claimable: never claimed, or the winning claim's lease ran out."""
    CLAIMED = "claimed"
    """The winning claim's lease runs."""
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim record: the round it was made in, who made it, and its lease."""

    round: int
    stamp: int
    agent: str
    node: str
    expires: float

    @property
    def key(self) -> ClaimKey:
        """What identifies the claim in the replicated map (its lease is the value)."""
        return (self.round, self.stamp, self.agent, self.node)


@dataclass(frozen=True, slots=True)
class Record:
    """A completion (the value is the result) or a failure (the value is the reason)."""

    stamp: int
    agent: str
    node: str
    value: Value


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one task, as ``TaskBoard.tasks()`` returns it."""

    id: str
    payload: Value
    depends_on: tuple[str, ...]
    posted: int
    status: Status
    claim: Claim | None
    """The winning claim (kept after the task finished, and after its lease ran out)."""
    progress: float
    """The last fraction the winning claim reported; 1.0 once done."""
    result: Value
    """The first completion's result (None until done)."""
    reason: Value
    """The first failure's reason, if the task failed."""
    finished_by: str | None
    """The agent of the first completion, or of the first failure if it failed."""
    attempts: int
    """Claims made on it, concurrent losers included."""
    completions: int
    """Completions recorded: more than one means duplicate work (at-least-once)."""
    finished_at: int | None = None
    """The stamp of the record that finished it (the first completion, else the first
    failure), nanoseconds on the finisher's clock made monotonic like ``posted``;
    None while unfinished. ``TaskBoard.prune`` compares it with its cutoff."""

    @property
    def claimant(self) -> str | None:
        """The agent of the winning claim."""
        return None if self.claim is None else self.claim.agent

    @property
    def lease_expires(self) -> float | None:
        """When the winning claim's lease ends (seconds, the claimer's clock)."""
        return None if self.claim is None else self.claim.expires

    @property
    def finished(self) -> bool:
        return self.status in (Status.DONE, Status.FAILED)


EventKind = Literal[
    "posted", "done", "failed", "claimed", "ready", "expired", "progress", "renewed", "pruned"
]
"""What ``TaskBoard.watch`` reports. A contract: kinds are only ever added (``pruned``, a
task that left the board, came last), so match the kinds you need and ignore the rest."""


def winner(claims: Iterable[Claim]) -> Claim | None:
    """The winning claim: the highest round, then the earliest stamp, agent, node."""
    return min(claims, key=lambda c: (-c.round, c.stamp, c.agent, c.node), default=None)


def first(records: Iterable[Record]) -> Record | None:
    """The record that counts: the earliest stamp, then agent, then node."""
    return min(records, key=lambda r: (r.stamp, r.agent, r.node), default=None)


def read_board(raw: Mapping[Hashable, Any], now: float) -> dict[str, Task]:
    """Every posted task of a board's replicated value, as seen at ``now``."""
    posted = {
        task_id: (fields, spec, _records(fields, COMPLETIONS))  # each parsed once
        for task_id, fields in raw.items()
        if isinstance(task_id, str)
        and isinstance(fields, Mapping)
        and (spec := _spec(fields)) is not None
    }
    done = {task_id for task_id, (_, _, completions) in posted.items() if completions}
    return {
        task_id: _task(task_id, fields, spec, completions, done=done, now=now)
        for task_id, (fields, spec, completions) in posted.items()
    }


def would_cycle(depends: Mapping[str, tuple[str, ...]], task_id: str, on: Iterable[str]) -> bool:
    """Whether ``task_id`` depending on ``on`` closes a cycle among ``depends``."""
    seen: set[str] = set()
    stack = list(on)
    while stack:
        current = stack.pop()
        if current == task_id:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(depends.get(current, ()))
    return False


def event_kind(before: Task | None, after: Task) -> EventKind | None:
    """What one change of a task's view means, the most telling first; None if nothing."""
    if before is None:
        return "posted"
    if after.status is not before.status and after.finished:
        return "done" if after.status is Status.DONE else "failed"
    claim_after = None if after.claim is None else after.claim.key
    if claim_after != (None if before.claim is None else before.claim.key):
        return "claimed"
    if before.status is Status.BLOCKED and after.status is Status.OPEN:
        return "ready"
    if before.status is Status.CLAIMED and after.status is Status.OPEN:
        return "expired"
    if after.progress != before.progress:
        return "progress"
    if after.lease_expires != before.lease_expires:
        return "renewed"
    return None


def _task(
    task_id: str,
    fields: Mapping[str, Any],
    spec: tuple[Value, tuple[str, ...], int],
    completions: list[Record],
    *,
    done: set[str],
    now: float,
) -> Task:
    payload, depends_on, posted = spec
    claims = _claims(fields)
    claim = winner(claims)
    failures = _records(fields, FAILURES)
    completed, failed = first(completions), first(failures)
    if completed is not None:
        status = Status.DONE
    elif failed is not None:
        status = Status.FAILED
    elif not all(dependency in done for dependency in depends_on):
        status = Status.BLOCKED
    elif claim is not None and claim.expires > now:
        status = Status.CLAIMED
    else:
        status = Status.OPEN
    finished = completed or failed
    return Task(
        id=task_id,
        payload=payload,
        depends_on=depends_on,
        posted=posted,
        status=status,
        claim=claim,
        progress=1.0 if completed is not None else _progress(fields, claim),
        result=None if completed is None else completed.value,
        reason=None if failed is None or completed is not None else failed.value,
        finished_by=None if finished is None else finished.agent,
        attempts=len(claims),
        completions=len(completions),
        finished_at=None if finished is None else finished.stamp,
    )


def _spec(fields: Mapping[str, Any]) -> tuple[Value, tuple[str, ...], int] | None:
    spec = fields.get(SPEC)
    if not isinstance(spec, Mapping):
        return None
    depends_on, posted = spec.get("depends_on"), spec.get("posted")
    if not isinstance(depends_on, tuple) or not all(isinstance(d, str) for d in depends_on):
        return None
    if type(posted) is not int:
        return None
    return spec.get("payload"), depends_on, posted


def _entries(fields: Mapping[str, Any], name: str) -> list[tuple[Any, Any]]:
    entries = fields.get(name)
    return list(entries.items()) if isinstance(entries, Mapping) else []


def _claims(fields: Mapping[str, Any]) -> list[Claim]:
    return [
        Claim(key[0], key[1], key[2], key[3], float(expires))
        for key, expires in _entries(fields, CLAIMS)
        if _shaped(key, (int, int, str, str)) and _number(expires)
    ]


def _records(fields: Mapping[str, Any], name: str) -> list[Record]:
    return [
        Record(key[0], key[1], key[2], value)
        for key, value in _entries(fields, name)
        if _shaped(key, (int, str, str))
    ]


def _progress(fields: Mapping[str, Any], claim: Claim | None) -> float:
    if claim is None:
        return 0.0
    fraction: Any = dict(_entries(fields, PROGRESS)).get(claim.key)
    return float(fraction) if _number(fraction) else 0.0


def _shaped(key: object, types: tuple[type, ...]) -> bool:
    return (
        isinstance(key, tuple)
        and len(key) == len(types)
        and all(type(item) is kind for item, kind in zip(key, types, strict=True))
    )


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
