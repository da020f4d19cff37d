"""``agentsync status --watch``: a node's catch-up with each peer, refreshed until stopped.

Each refresh reads ``GET /v1/status`` once. A refresh that fails (the node
down or restarting, a timeout, an HTTP error, a body that is not a status)
is shown as such and the watch goes on: it is for following a node through
trouble, and the view resumes when the node answers again. On a terminal
with rich installed (the ``cli`` extra) every peer gets progress bars: the
dots of this node it has seen, and the pieces of a snapshot under way.
Anywhere else it prints one line per refresh (one JSON object with
``--json``), which scripts and logs can read. rich is imported only on that
path, so it is not a runtime dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

Status = Mapping[str, Any]


class RefreshError(Exception):
    """A refresh that failed but may succeed later; its message says why (one line).

    ``fetch`` raises it for a node that is down, slow or answers badly; any
    other exception ends the watch (an error no retry can fix).
    """


Row = tuple[str, str, int, int | None, str]
"""A bar: (key, label, done, total or None when unknown, unit)."""


def rows(status: Status) -> Iterator[Row]:
    """Each peer's bars: the dots it has seen of this node's, then each snapshot under way."""
    dots = (status.get("dots") or {}).get("all", 0)
    for peer in status.get("peers") or []:
        who = str(peer.get("node_id") or peer.get("url"))
        lag = peer.get("lag")  # None until the peer reported its version vector
        seen, total = (dots - lag["all"], dots) if isinstance(lag, Mapping) else (0, None)
        yield f"{peer.get('url')} dots", f"{who} has seen", seen, total, "dots"
        for way, (done, total) in sorted((peer.get("catch_up") or {}).items()):
            yield f"{peer.get('url')} {way}", f"{who} {way}", done, total, "pieces"


def line(status: Status) -> str:
    """One refresh as one line: the node's dots, then each peer's state, lag and catch-up."""
    parts = []
    for peer in status.get("peers") or []:
        lag = peer.get("lag")
        text = f"{peer.get('node_id') or peer.get('url')} {peer.get('state')} lag "
        text += str(lag["all"]) if isinstance(lag, Mapping) else "?"
        for way, (done, total) in sorted((peer.get("catch_up") or {}).items()):
            text += f" {way} {done}/{total}"
        parts.append(text)
    dots = (status.get("dots") or {}).get("all", 0)
    return f"{status.get('node_id')} dots {dots}: " + ("; ".join(parts) or "no peers")


def record(status: Status) -> str:
    """One refresh as one line of JSON: what ``line`` shows, with the peers' URLs."""
    keep = ("url", "node_id", "state", "lag", "catch_up")
    return json.dumps(
        {
            "node_id": status.get("node_id"),
            "uptime_s": status.get("uptime_s"),
            "dots": status.get("dots"),
            "peers": [{k: peer.get(k) for k in keep} for peer in status.get("peers") or []],
        },
        sort_keys=True,
    )


class _Lines:
    """Plain output: one line (or JSON object) per refresh."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self._out = out
        self._json = as_json
        self._format = record if as_json else line

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, status: Status) -> None:
        print(self._format(status), file=self._out, flush=True)

    def failed(self, reason: str) -> None:
        if self._json:
            text = json.dumps({"event": "error", "reason": reason}, sort_keys=True)
        else:
            text = f"error: {reason}"
        print(text, file=self._out, flush=True)


class _Bars:
    """rich progress bars, one per row, redrawn in place on each refresh."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            console=console,
            auto_refresh=False,  # drawn once per refresh, when the numbers change
        )
        self._tasks: dict[str, TaskID] = {}
        self._titled = False

    def __enter__(self) -> _Bars:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def show(self, status: Status) -> None:
        if not self._titled:
            self._progress.console.print(f"agentsync node {status.get('node_id')}: its peers")
            self._titled = True
        current = set()
        for key, label, done, total, unit in rows(status):
            current.add(key)
            if key in self._tasks:
                self._progress.update(self._tasks[key], completed=done, total=total)
            else:
                self._tasks[key] = self._progress.add_task(
                    label, completed=done, total=total, unit=unit
                )
        for key in set(self._tasks) - current:  # a snapshot that ended, a peer forgotten
            self._progress.remove_task(self._tasks.pop(key))
        self._progress.refresh()

    def failed(self, reason: str) -> None:
        """A line above the bars, which keep the last values read until the node answers."""
        from rich.text import Text

        self._progress.console.print(Text(f"refresh failed: {reason}", style="red"))
        self._progress.refresh()


def _view(out: TextIO, as_json: bool) -> _Lines | _Bars:
    """Bars on a terminal with rich installed, plain lines otherwise."""
    if not as_json:
        try:
            from rich.console import Console
        except ImportError:
            pass
        else:
            console = Console(file=out)
            if console.is_terminal:
                return _Bars(console)
    return _Lines(out, as_json)


async def watch(
    fetch: Callable[[], Awaitable[Status]],
    out: TextIO,
    stopping: asyncio.Event,
    interval: float,
    *,
    count: int | None = None,
    as_json: bool = False,
) -> bool:
    """Show ``fetch()`` every ``interval`` seconds: ``count`` times, or until ``stopping`` is set.

    A refresh that raises ``RefreshError`` is shown as a failure and counts
    as one of ``count``; the next comes an interval later, as after any
    other. Any other exception from ``fetch`` ends the watch at once.
    The CLI sets ``stopping`` on SIGINT or SIGTERM: a watch then ends cleanly
    (the last view left on screen), under a supervisor or Ctrl-C. Either way
    the result is whether the last refresh succeeded (the CLI's exit code).
    """
    succeeded = True
    with _view(out, as_json) as view:
        done = 0
        while not stopping.is_set():
            try:
                status = await fetch()
            except RefreshError as exc:
                view.failed(str(exc))
                succeeded = False
            else:
                view.show(status)
                succeeded = True
            done += 1
            if done == count:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
    return succeeded
