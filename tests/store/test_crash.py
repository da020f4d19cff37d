"""Crash safety: a writing node killed with SIGKILL loses no acknowledged write.

A child process (``tests/store/crash_child.py``) runs a Node with a data_dir
and writes: set adds, counter increments, some in batches. It prints each
write once the call (or the batch) that made it returned. The test kills it
with SIGKILL after a random number of printed lines, so the kill lands among
the writes (and, as the child compacts often, sometimes in a compaction),
over at least 30 rounds on the same data_dir, alternating ``durability``
``"full"`` and ``"normal"`` (both survive a process crash). After each kill
the test opens the directory as a restarted node would and checks that every
printed write is there, that nothing was made up or lost from before, and
that SQLite's ``PRAGMA integrity_check`` says ``ok``. The second test does
the same while the child merges a peer's writes, and also checks that what
it held of the peer's writes survives and that the restarted state converges
with the peer.

The kills come from a seeded RNG; the seed is printed (pytest shows it on a
failure) and in every assertion message. ``AGENTSYNC_CRASH_SEED=N`` replays
the same rounds (the writes and kill points; not the timing). Every wait has
a deadline, and every child is killed and reaped whatever the test did.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentsync import Node
from agentsync.store.sqlite import DB_FILE
from tests.store.crash_child import HITS, ITEMS, MAX_BATCH, NODE_ID, PEER_ITEMS

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 30
AHEAD = 2
"""Children spawned ahead of their round, importing while the rounds before run."""
START_DEADLINE_S = 20.0
"""How long a child may take to start and print ``ready``."""
LINE_DEADLINE_S = 10.0
"""How long a running child may go without printing the lines the test waits for."""
REAP_DEADLINE_S = 10.0
CONVERGE_DEADLINE_S = 15.0
COMPACT_BYTES = 2048
"""The child folds its log into a snapshot this soon, so some kills land in a compaction."""
WRITE = re.compile(r"^(add|inc) (\d+)\.(\d+)$")
PEER = re.compile(r"^peer (\d+)$")


def crash_seed() -> int:
    """The seed of this run: ``AGENTSYNC_CRASH_SEED``, or a fresh one (printed)."""
    given = os.environ.get("AGENTSYNC_CRASH_SEED")
    seed = int(given) if given else random.SystemRandom().randrange(1 << 32)
    print(f"crash test seed {seed} (replay with AGENTSYNC_CRASH_SEED={seed})")
    return seed


class Child:
    """One ``crash_child`` process and the whole lines it printed."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.store.crash_child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=ROOT,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.lines: list[str] = []
        """Every whole line read so far (a line cut by the kill is not one)."""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):
                self._lines.put(line[:-1])
        self._lines.put(None)

    def _next(self, deadline: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
            ended = "is still running"
        else:
            ended = f"exited with {self.proc.wait(REAP_DEADLINE_S)}" if line is None else ""
        if line is None:
            raise AssertionError(
                f"the child printed no {what} ({ended}; {len(self.lines)} lines so far); "
                f"stderr: {self.log.read_text()!r}"
            )
        self.lines.append(line)
        return line

    def go(self) -> None:
        """Let the child (imported by now, or soon) open the data_dir and write."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died: wait_ready shows its stderr
            self.proc.stdin.write("go\n")
            self.proc.stdin.close()

    def wait_ready(self) -> str:
        """The child's URL, once it started its node."""
        line = self._next(time.monotonic() + START_DEADLINE_S, "ready line")
        assert line.startswith("ready http://"), line
        return line.split()[1]

    def wait_lines(self, count: int) -> None:
        """Read until the child printed ``count`` lines after ``ready``."""
        deadline = time.monotonic() + LINE_DEADLINE_S
        while len(self.lines) - 1 < count:
            self._next(deadline, f"{count} lines within {LINE_DEADLINE_S} s")

    def kill(self) -> list[str]:
        """SIGKILL, reap, and every whole line it printed after ``ready``."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(REAP_DEADLINE_S)
        self._reader.join(REAP_DEADLINE_S)
        assert not self._reader.is_alive(), "the child's stdout did not end"
        while not self._lines.empty():  # the lines the test had not waited for
            line = self._lines.get_nowait()
            if line is not None:
                self.lines.append(line)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.lines[1:]

    def close(self) -> None:
        """Kill and reap (teardown; idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(REAP_DEADLINE_S)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._stderr.close()


def rounds(spawn: Callable[..., Child], args: Callable[[int], list[str]]) -> Iterator[Child]:
    """``ROUNDS`` children, each started and ready in turn (``args(round)``).

    Children are spawned ``AHEAD`` rounds early: the import (~0.4 s, most
    of a round) overlaps the rounds before, and a child opens the data_dir
    only when told to go, after the last round's checks closed it.
    """
    upcoming = collections.deque(spawn(*args(r)) for r in range(min(AHEAD, ROUNDS)))
    for round_ in range(ROUNDS):
        child = upcoming.popleft()
        child.go()
        child.wait_ready()
        if round_ + AHEAD < ROUNDS:
            upcoming.append(spawn(*args(round_ + AHEAD)))
        yield child


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start crash children; every one is killed and reaped at teardown."""
    children: list[Child] = []

    def start(*args: str) -> Child:
        child = Child([*args], tmp_path / f"child{len(children)}.err")
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.close()


@dataclass
class Printed:
    """What one round's child acknowledged."""

    adds: set[str] = field(default_factory=set)
    incs: int = 0
    last_index: int = 0
    peer_count: int = 0
    """The last ``peer N`` count it printed (0 if none)."""
    peer_lines: int = 0


def parse(lines: list[str], round_: int) -> Printed:
    printed = Printed()
    for line in lines:
        if match := WRITE.match(line):
            kind, r, k = match.group(1), int(match.group(2)), int(match.group(3))
            assert r == round_, line
            printed.last_index = max(printed.last_index, k)
            if kind == "add":
                printed.adds.add(f"{r}.{k}")
            else:
                printed.incs += 1
        elif match := PEER.match(line):
            printed.peer_count = int(match.group(1))
            printed.peer_lines += 1
        else:
            raise AssertionError(f"an unexpected line from the child: {line!r}")
    return printed


def integrity(data_dir: Path) -> list[tuple[Any, ...]]:
    """``PRAGMA integrity_check`` of the store, opened by plain sqlite3 (the store is closed)."""
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        return db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()


class Ledger:
    """What the rounds so far made durable, checked against each restart.

    With ``peer``, a write under way at a kill may have reached the peer in
    a gossip round without reaching the disk (a batch is logged as it ends),
    and come back in a later round: such writes of earlier rounds are no
    made-up ones, and the counter may gain a batch's worth per round.
    """

    def __init__(self, seed: int, *, peer: bool = False) -> None:
        self.seed = seed
        self.peer = peer
        self.items: frozenset[str] = frozenset()
        self.hits = 0
        self.durable_incs = 0
        """Increments printed over all rounds: the counter never drops below."""
        self.last_index: list[int] = []
        """The highest write index each round printed."""

    def check(self, round_: int, printed: Printed, value: dict[str, Any]) -> None:
        """Check what a restart holds against what round ``round_``'s child printed."""
        at = f"seed {self.seed}, round {round_}"
        items = frozenset(value.get(ITEMS, frozenset()))
        hits = value.get(HITS, 0)
        lost = sorted(printed.adds - items)
        assert not lost, f"{at}: acknowledged adds lost: {lost[:20]} ({len(lost)} in all)"
        forgotten = sorted(self.items - items)
        assert not forgotten, f"{at}: items of earlier rounds lost: {forgotten[:20]}"
        self.durable_incs += printed.incs
        assert hits >= self.durable_incs, (
            f"{at}: the counter is {hits}, below the {self.durable_incs} acknowledged increments"
        )
        assert hits >= self.hits + printed.incs, (
            f"{at}: the counter went from {self.hits} to {hits} with {printed.incs} printed"
        )
        # At most one write or batch was under way when the kill came: nothing else is new.
        most = (
            self.durable_incs + MAX_BATCH * (round_ + 1)
            if self.peer
            else self.hits + printed.incs + MAX_BATCH
        )
        assert hits <= most, (
            f"{at}: the counter went from {self.hits} to {hits} with {printed.incs} printed "
            f"(at most {most} can have been made)"
        )
        self.last_index.append(printed.last_index)
        made_up = sorted(item for item in items - self.items if not self._made(item, round_))
        assert not made_up, f"{at}: items no write made: {made_up[:20]}"

    def _made(self, item: str, round_: int) -> bool:
        """Whether a write of the child may have added ``item`` (round.index)."""
        made_in, index = map(int, item.split("."))
        if made_in != round_ and not (self.peer and made_in < round_):
            return False
        return 1 <= index <= self.last_index[made_in] + MAX_BATCH

    def closed(self, value: dict[str, Any]) -> None:
        """The state the next child starts from (the checker's node closed with it)."""
        self.items = frozenset(value.get(ITEMS, frozenset()))
        self.hits = value.get(HITS, 0)


def restore(data_dir: Path) -> dict[str, Any]:
    """Open the directory as a restart would; its value; closed again."""
    node = Node(data_dir=data_dir)
    try:
        assert node.node_id == NODE_ID
        return node.value
    finally:
        asyncio.run(node.stop())  # closes the store of a node never started


def child_args(data_dir: Path, round_: int, seed: int, **extra: str) -> list[str]:
    args = [
        str(data_dir),
        f"--round={round_}",
        f"--seed={seed}",
        f"--durability={('full', 'normal')[round_ % 2]}",
        f"--compact-bytes={COMPACT_BYTES}",
    ]
    return args + [f"--{key.replace('_', '-')}={value}" for key, value in extra.items()]


def snapshot_seq(data_dir: Path) -> int:
    """The log seq the store's snapshot covers (0 before the first compaction)."""
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        row = db.execute("SELECT seq FROM snapshot").fetchone()
    finally:
        db.close()
    return row[0] if row else 0


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    ledger = Ledger(seed)
    seeds = [rng.randrange(1 << 32) for _ in range(ROUNDS)]
    kill_after = [rng.randint(1, 400) for _ in range(ROUNDS)]
    compactions, seq = 0, 0
    children = rounds(spawn, lambda r: child_args(data_dir, r, seeds[r]))
    for round_, child in enumerate(children):
        at = f"seed {seed}, round {round_}"
        child.wait_lines(kill_after[round_])
        printed = parse(child.kill(), round_)

        value = restore(data_dir)
        ledger.check(round_, printed, value)
        ledger.closed(value)
        assert integrity(data_dir) == [("ok",)], f"{at}: {integrity(data_dir)}"
        compactions += seq != (seq := snapshot_seq(data_dir))
    print(f"{ROUNDS} kills; {len(ledger.items)} items, {ledger.hits} hits; "
          f"compacted in {compactions} rounds")  # fmt: skip
    assert compactions, f"seed {seed}: the child never compacted: no kill could land in one"


class Peer:
    """A node in the test process that writes ``p0``, ``p1``, ... to the set ``"peer"``."""

    def __init__(self, pace: float) -> None:
        self.node = Node.start_background("peer", gossip_interval=0.05)
        self.written = 0
        """``p0`` .. ``p{written-1}`` are written (their adds returned)."""
        self._pace = pace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="peer-writer", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        items = self.node.set(PEER_ITEMS)
        while not self._stop.is_set():
            items.add(f"p{self.written}")
            self.written += 1
            self._stop.wait(self._pace)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(REAP_DEADLINE_S)
        self.node.stop()


def prefix(count: int) -> frozenset[str]:
    return frozenset(f"p{i}" for i in range(count))


async def converge(data_dir: Path, peer: Peer, at: str) -> dict[str, Any]:
    """Start the restored node with the peer; wait until they agree; its value when closed.

    They agree when the restored node holds every peer write made before it
    started, and the peer holds the restored node's items and counter.
    """
    node = Node(data_dir=data_dir, peers=[peer.node.url], gossip_interval=0.05)
    await node.start()
    try:
        written = peer.written
        deadline = time.monotonic() + CONVERGE_DEADLINE_S
        while True:
            await node.sync_now()
            mine, theirs = node.value, peer.node.value
            if (
                prefix(written) <= mine.get(PEER_ITEMS, frozenset())
                and mine.get(ITEMS) == theirs.get(ITEMS)
                and mine.get(HITS) == theirs.get(HITS)
            ):
                return mine
            assert time.monotonic() < deadline, (
                f"{at}: the restored node and the peer did not converge within "
                f"{CONVERGE_DEADLINE_S} s"
            )
            await asyncio.sleep(0.02)
    finally:
        await node.stop()


def test_sigkill_while_merging_a_peers_writes(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    ledger = Ledger(seed, peer=True)
    peer = Peer(pace=0.004)
    seeds = [rng.randrange(1 << 32) for _ in range(ROUNDS)]
    kill_after = [rng.randint(5, 150) for _ in range(ROUNDS)]
    seen_peer = 0
    try:
        url = peer.node.url
        args = lambda r: child_args(data_dir, r, seeds[r], peer=url, pace="0.001")  # noqa: E731
        children = rounds(spawn, args)
        for round_, child in enumerate(children):
            at = f"seed {seed}, round {round_}"
            child.wait_lines(kill_after[round_])
            printed = parse(child.kill(), round_)
            seen_peer += printed.peer_lines > 0

            value = restore(data_dir)
            ledger.check(round_, printed, value)
            held = frozenset(value.get(PEER_ITEMS, frozenset()))
            assert held == prefix(len(held)), (
                f"{at}: the peer's writes held are no prefix: {sorted(prefix(len(held)) ^ held)}"
            )
            assert len(held) >= printed.peer_count, (
                f"{at}: {len(held)} of the peer's writes after the restart; the child had "
                f"printed that it held {printed.peer_count}"
            )
            value = asyncio.run(converge(data_dir, peer, at))
            ledger.closed(value)
            assert integrity(data_dir) == [("ok",)], f"{at}: {integrity(data_dir)}"
        print(
            f"{ROUNDS} kills; {len(ledger.items)} items, {ledger.hits} hits, "
            f"{peer.written} peer writes; the child printed peer counts in {seen_peer} rounds"
        )
    finally:
        peer.close()
    assert seen_peer >= ROUNDS // 2, (
        f"seed {seed}: the child saw the peer's writes in only {seen_peer} of {ROUNDS} rounds"
    )
