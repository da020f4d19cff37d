"""The demo: three agents on loopback share a board, one drops off, all converge.

``agentsync demo`` (and ``make demo``) runs it. Three real Nodes serve HTTP on
127.0.0.1 and gossip every 100 ms. They share a board: a ``tasks_done``
counter, a ``findings`` set, a ``status`` map (each agent writes its own key)
and a ``needs_review`` flag.

1. **Together.** All three write at once; the board converges within a few
   gossip rounds.
2. **Offline.** The researcher drops off the network: it stops its node
   (nobody can reach it, it reaches nobody) and keeps writing to its local
   replicas. Meanwhile the planner retracts a finding and clears the review
   flag the writer raised, while the offline researcher re-adds that finding
   and raises the flag again.
3. **Back.** The researcher starts its node again. Gossip carries what each
   side missed; the concurrent writes resolve by the types' rules (the re-add
   wins, the raise wins, counts add up) and every agent ends with one board.

On a terminal the board redraws a few times per second; elsewhere (a pipe, a
log, the tests) it prints a snapshot after each step. The last line is
``converged: True`` when every agent holds the same board.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TextIO

from agentsync.node import Node

AGENTS = ("planner", "researcher", "writer")
OFFLINE = "researcher"
GOSSIP_INTERVAL_S = 0.1
FRAME_S = 0.2
"""The live view redraws this often."""
CONVERGE_TIMEOUT_S = 8.0
STEP_S = 0.15
"""The pause between an agent's writes, so the writes interleave."""
LIVE_STEP_S = 0.3
LIVE_HOLD_S = 0.6
"""On a terminal the story runs slower, and each step's result stays a moment."""

ROWS = (
    ("tasks_done", "tasks done"),
    ("findings", "findings"),
    ("status", "status"),
    ("needs_review", "needs review"),
)
COLUMN_CHARS = 22


def _cell(name: str, value: Any) -> str:
    """A short rendering of one value on the board."""
    if name == "needs_review":
        text = "yes" if value else "no"
    elif value is None:
        text = "-"
    elif name == "findings":
        text = ",".join(sorted(str(v) for v in value)) or "(none)"
    elif name == "status":
        text = " ".join(f"{str(k)[0]}:{v}" for k, v in sorted(value.items()))
    else:
        text = str(value)
    return text if len(text) <= COLUMN_CHARS else text[: COLUMN_CHARS - 1] + "…"


def render(
    boards: Mapping[str, Mapping[str, Any]], online: Mapping[str, bool], title: str
) -> list[str]:
    """The board as lines: one row per name, one column per agent, then whether they agree."""
    agents = list(boards)
    width = max(len(label) for _, label in ROWS)
    lines = [f"== {title}"]
    head = " " * width + "  " + "  ".join(a.ljust(COLUMN_CHARS) for a in agents) + "  agree"
    lines.append(head.rstrip())
    for name, label in ROWS:
        values = [boards[a].get(name) for a in agents]
        cells = [_cell(name, v) for v in values]
        agree = "yes" if all(v == values[0] for v in values) else "..."
        row = label.ljust(width) + "  " + "  ".join(c.ljust(COLUMN_CHARS) for c in cells)
        lines.append(f"{row}  {agree}")
    link = ["online" if online[a] else "OFFLINE" for a in agents]
    lines.append(
        ("link".ljust(width) + "  " + "  ".join(c.ljust(COLUMN_CHARS) for c in link)).rstrip()
    )
    return lines


class View:
    """Shows the board: redrawn in place on a terminal, snapshots elsewhere."""

    def __init__(self, nodes: Mapping[str, Node], out: TextIO, live: bool) -> None:
        self.nodes = nodes
        self.out = out
        self.live = live
        self.online = dict.fromkeys(nodes, False)
        self.title = ""
        self._drawn = 0
        self._task: asyncio.Task[None] | None = None

    def boards(self) -> dict[str, dict[str, Any]]:
        return {name: node.value for name, node in self.nodes.items()}

    def _frame(self) -> list[str]:
        return render(self.boards(), self.online, self.title)

    def draw(self) -> None:
        """Redraw the board in place (live view only)."""
        lines = self._frame()
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self.out.write(up + "\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def say(self, text: str) -> None:
        """A line of narration, above the board."""
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self.out.write(text + "\n")
        if self.live:
            self.draw()
        else:
            self.out.flush()

    def step(self, title: str) -> None:
        self.title = title
        if self.live:
            self.draw()

    def snapshot(self) -> None:
        """The board as it is now, as plain lines (once per step off a terminal)."""
        if self.live:
            self.draw()
        else:
            self.out.write("\n".join(self._frame()) + "\n\n")
            self.out.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FRAME_S)
            self.draw()

    def __enter__(self) -> View:
        if self.live:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop redrawing; the last board stays on screen and later lines go below it."""
        if self._task is not None:
            self._task.cancel()
        if self.live:
            self.draw()
        self.live = False
        self._drawn = 0


async def _paced(steps: Sequence[Callable[[], object]], pause: float) -> None:
    for step in steps:
        step()
        await asyncio.sleep(pause)


async def _together(nodes: Mapping[str, Node], pause: float) -> None:
    """Step 1: all three agents write at once."""

    def writes(name: str, findings: Sequence[str], status: str) -> list[Callable[[], object]]:
        node = nodes[name]
        steps: list[Callable[[], object]] = [
            partial(node.lwwmap("status").__setitem__, name, status)
        ]
        for finding in findings:
            steps.append(partial(node.set("findings").add, finding))
            steps.append(node.counter("tasks_done").increment)
        return steps

    review = nodes["writer"].flag("needs_review").enable  # the draft needs a review
    await asyncio.gather(
        _paced(writes("planner", ["api"], "plan"), pause),
        _paced(writes("researcher", ["bug", "gc"], "read"), pause),
        _paced([*writes("writer", ["doc"], "write"), review], pause),
    )


async def _apart(nodes: Mapping[str, Node], pause: float) -> None:
    """Step 2: the researcher writes offline while the others carry on."""
    planner, researcher, writer = (nodes[a] for a in AGENTS)
    await asyncio.gather(
        _paced(
            [
                lambda: planner.set("findings").discard("gc"),
                lambda: planner.flag("needs_review").disable(),
                lambda: planner.lwwmap("status").__setitem__("planner", "review"),
                lambda: planner.counter("tasks_done").increment(),
            ],
            pause,
        ),
        _paced(
            [
                lambda: writer.set("findings").add("faq"),
                lambda: writer.counter("tasks_done").increment(2),
                lambda: writer.lwwmap("status").__setitem__("writer", "edit"),
            ],
            pause,
        ),
        _paced(
            [
                lambda: researcher.set("findings").add("gc"),
                lambda: researcher.set("findings").add("cpu"),
                lambda: researcher.flag("needs_review").enable(),
                lambda: researcher.counter("tasks_done").increment(3),
                lambda: researcher.lwwmap("status").__setitem__("researcher", "away"),
            ],
            pause,
        ),
    )


async def _wait_equal(nodes: Sequence[Node], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        values = [node.value for node in nodes]
        if all(v == values[0] for v in values[1:]):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


async def _story(out: TextIO, live: bool) -> bool:
    nodes = {name: Node(name, gossip_interval=GOSSIP_INTERVAL_S) for name in AGENTS}
    started: list[Node] = []
    view = View(nodes, out, live)
    pause, hold = (LIVE_STEP_S, LIVE_HOLD_S) if live else (STEP_S, 0.0)
    try:
        for node in nodes.values():
            await node.start()
            started.append(node)
        for node in nodes.values():
            for other in nodes.values():
                if other is not node:
                    node.add_peer(other.url)
        view.online = dict.fromkeys(nodes, True)
        with view:
            view.say(
                "Three agents share one board over HTTP on loopback, gossiping every "
                f"{GOSSIP_INTERVAL_S * 1000:.0f} ms. Nobody coordinates."
            )
            view.say("\n1. Together: all three write at once.")
            view.step("1. together")
            await _together(nodes, pause)
            await _wait_equal(list(nodes.values()), CONVERGE_TIMEOUT_S)
            view.snapshot()
            await asyncio.sleep(hold)

            view.say(
                f"\n2. Offline: the {OFFLINE} drops off the network and keeps writing. "
                "The planner retracts 'gc' and clears the review flag; offline, the "
                f"{OFFLINE} re-adds 'gc' and raises the flag again."
            )
            view.step("2. offline")
            await _go_offline(nodes[OFFLINE], view)
            await _apart(nodes, pause)
            await _wait_equal([nodes[a] for a in AGENTS if a != OFFLINE], CONVERGE_TIMEOUT_S)
            view.snapshot()
            await asyncio.sleep(hold)

            view.say(f"\n3. Back: the {OFFLINE} rejoins; gossip carries what each side missed.")
            view.step("3. back")
            await _come_back(nodes[OFFLINE], view)
            equal = await _wait_equal(list(nodes.values()), CONVERGE_TIMEOUT_S)
            view.step("3. back: converged" if equal else "3. back: NOT converged")
            view.snapshot()
        view.say(_moral(nodes["planner"].value))
        view.say(f"\nconverged: {equal}")
        return equal
    finally:
        for node in started:
            await node.stop()


def _moral(board: Mapping[str, Any]) -> str:
    """What the final board shows, read off the board itself."""
    findings = board.get("findings", frozenset())
    status = board.get("status", {})
    return "\n".join(
        [
            f"\n- 'gc' {'is back' if 'gc' in findings else 'is gone'}: the offline re-add was"
            " concurrent with the retraction, and an add wins.",
            f"- needs review = {'yes' if board.get('needs_review') else 'no'}: the offline"
            " raise was concurrent with the clear, and an enable wins.",
            f"- tasks done = {board.get('tasks_done', 0)}: every agent's increments count,"
            " offline ones too.",
            f"- status: each agent wrote only its own key, so none is lost"
            f" ({', '.join(f'{k}={v}' for k, v in sorted(status.items()))}).",
        ]
    )


async def _go_offline(node: Node, view: View) -> None:
    """Take ``node`` off the network: its server and its gossip stop, its replicas stay.

    Writes to a stopped node apply to its local replicas, as an agent on a
    plane would, and spread once it starts again.
    """
    await node.stop()  # a restart of the same Node object keeps its URL
    view.online[node.node_id] = False


async def _come_back(node: Node, view: View) -> None:
    await node.start()
    view.online[node.node_id] = True


def run(out: TextIO | None = None, *, live: bool | None = None) -> bool:
    """Tell the story on ``out`` (stdout); return True when every agent ends up equal.

    ``live`` redraws the board in place; by default it is on when ``out`` is a terminal.
    """
    stream = out if out is not None else sys.stdout
    if live is None:
        live = stream.isatty()
    return asyncio.run(_story(stream, live))
