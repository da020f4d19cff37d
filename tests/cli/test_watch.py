"""``agentsync status --watch``: bars with rich on a terminal, plain lines otherwise.

Real nodes on loopback give the dots each peer has seen; a snapshot on
loopback ends within one poll, so the catch-up bars are shown from a stand-in
that answers a transfer's progress, refresh after refresh. ``--count`` bounds
every run; a signal ends one that has none.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentsync.cli import main
from agentsync.node import Node
from tests.cli.test_args_and_format import _serve

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0
WRITES = 50


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Node, Node]]:
    """alpha, with WRITES dots, and beta, which has seen all of them."""
    alpha = Node.start_background("alpha", gossip_interval=0.05)
    beta = Node.start_background("beta", peers=[alpha.url], gossip_interval=0.05)
    try:
        for _ in range(WRITES):
            alpha.counter("done").increment()
        deadline = time.monotonic() + DEADLINE_S
        while not _in_sync(alpha):
            assert time.monotonic() < deadline, "beta did not catch up with alpha"
            time.sleep(0.02)
        yield alpha, beta
    finally:
        beta.stop()
        alpha.stop()


def _in_sync(alpha: Node) -> bool:
    """beta has reported a vector with every one of alpha's dots (GET /v1/status)."""
    with urllib.request.urlopen(alpha.url + "/v1/status", timeout=5) as reply:
        peers = json.loads(reply.read())["peers"]
    return [(p["node_id"], p["state"], p["lag"] and p["lag"]["all"]) for p in peers] == [
        ("beta", "alive", 0)
    ]


def main_lines(url: str, *options: str) -> list[str]:
    """The lines of one plain refresh, run as a script would (stdout not a terminal)."""
    out = subprocess.run(
        [sys.executable, "-m", "agentsync.cli", "status", url, "--count", "1", *options],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    return out.stdout.splitlines()


def _no_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import rich...`` fail, as it does without the cli extra."""
    for name in ("rich", "rich.console", "rich.progress"):
        monkeypatch.setitem(sys.modules, name, None)


def test_without_rich_it_prints_one_line_per_refresh_even_on_a_terminal(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha, _ = pair
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich would draw bars here
    _no_rich(monkeypatch)
    assert main(["status", alpha.url, "--watch", "0.05", "--count", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"alpha dots {WRITES}: beta alive lag 0"] * 3


def test_with_rich_on_a_terminal_each_peer_is_a_bar(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rich")
    alpha, _ = pair
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's Console takes captured stdout for a TTY
    assert main(["status", alpha.url, "--watch", "0.05", "--count", "2"]) == 0
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)
    assert "agentsync node alpha: its peers" in out
    assert re.search(rf"beta has seen\s+━+\s+{WRITES}/{WRITES} dots", out), out


def test_json_watch_is_one_object_per_refresh(pair: tuple[Node, Node]) -> None:
    alpha, beta = pair
    lines = main_lines(alpha.url, "--json", "--watch", "0.05", "--count", "2")
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        assert record["node_id"] == "alpha" and record["dots"]["all"] == WRITES
        [peer] = record["peers"]
        assert peer["url"] == beta.url and peer["lag"]["all"] == 0 and peer["catch_up"] == {}


def _transfer(*steps: dict[str, Any]) -> Iterator[str]:
    """A stand-in node whose /v1/status shows ``steps`` in turn, then the last for good."""
    answers = [
        json.dumps(
            {"node_id": "fresh", "dots": {"all": 0, "own": 0}, "peers": [{"url": "http://a:1"} | s]}
        ).encode()
        for s in steps
    ]

    class Routes(dict[str, tuple[int, bytes]]):
        def get(self, path: str, default: Any = None) -> Any:
            body = answers.pop(0) if len(answers) > 1 else answers[0]
            return (200, body) if path == "/v1/status" else default

    yield from _serve(Routes())


SNAPSHOT = (
    {"node_id": "big", "state": "alive", "lag": None, "catch_up": {"receiving": [3, 10]}},
    {"node_id": "big", "state": "alive", "lag": None, "catch_up": {"receiving": [7, 10]}},
    {"node_id": "big", "state": "alive", "lag": {"all": 0, "own": 0, "ahead": 0}, "catch_up": {}},
)


def test_a_snapshot_in_pieces_shows_as_lines_without_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_rich(monkeypatch)
    for url in _transfer(*SNAPSHOT):
        assert main(["status", url, "--watch", "0.01", "--count", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "fresh dots 0: big alive lag ? receiving 3/10",
        "fresh dots 0: big alive lag ? receiving 7/10",
        "fresh dots 0: big alive lag 0",
    ]


def test_a_snapshot_in_pieces_is_a_bar_that_goes_when_it_ends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("FORCE_COLOR", "1")
    for url in _transfer(*SNAPSHOT):
        assert main(["status", url, "--watch", "0.01", "--count", "3"]) == 0
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out).split("\r")
    drawn = [frame for frame in frames if "pieces" in frame]
    assert re.search(r"big receiving\s+[━╺╸]+\s+3/10 pieces", drawn[0]), drawn
    assert re.search(r"big receiving\s+[━╺╸]+\s+7/10 pieces", drawn[-1]), drawn
    assert "receiving" not in frames[-1] and "big has seen" in frames[-1]  # the transfer ended


def _watching(url: str, interval: str) -> subprocess.Popen[str]:
    """A watch with no --count, run as a script would, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentsync.cli", "status", url, "--watch", interval],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_sigterm_ends_a_watch_cleanly(pair: tuple[Node, Node]) -> None:
    alpha, _ = pair
    proc = _watching(alpha.url, "0.05")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("alpha dots")  # running: refreshes come
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------
# Through trouble: failed refreshes are shown and the watch goes on
# ---------------------------------------------------------------------------

STATUS = json.dumps(
    {
        "node_id": "fresh",
        "dots": {"all": 0, "own": 0},
        "peers": [{"url": "http://a:1"} | SNAPSHOT[2]],
    }
).encode()
VALUE_LINE = "fresh dots 0: big alive lag 0"
OK = (200, STATUS)


class StandIn:
    """A stand-in node on aiohttp, in a thread of its own, that can stop and come back.

    Its ``/v1/status`` gives ``answers`` (HTTP status, body) in turn, then the
    last for good; ``clients`` holds the address of each TCP connection whose
    requests it answered, so one per client session that keeps its connection.
    """

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)
        self.requests = 0
        self.clients: set[tuple[str, int]] = set()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _status(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.clients.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return web.Response(status=status, body=body, content_type="application/json")

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(DEADLINE_S)

    def start(self) -> None:
        """Listen, on the port of the last start if there was one."""

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/v1/status", self._status)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self.port = self._runner.addresses[0][1]

        self._call(start())

    def stop(self) -> None:
        """Stop listening and close every connection, as a node that stops does."""
        if self._runner is not None:
            self._call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(DEADLINE_S)
        self._loop.close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    node = StandIn(OK)
    node.start()
    try:
        yield node
    finally:
        node.close()


def test_a_watch_goes_on_while_the_node_is_down_and_shows_it_again(stand_in: StandIn) -> None:
    proc = _watching(stand_in.url, "0.02")
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def read() -> None:
        for text in stdout:
            lines.put(text)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []

    def until(prefix: str) -> None:
        """Read lines until one more starts with ``prefix``."""
        deadline = time.monotonic() + DEADLINE_S
        seen.append(lines.get(timeout=DEADLINE_S).rstrip("\n"))
        while not seen[-1].startswith(prefix):
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())).rstrip("\n"))

    try:
        until(VALUE_LINE)  # running
        stand_in.stop()
        until("error: cannot read")  # the node is down: shown, and the watch goes on
        until("error: cannot read")  # and again
        stand_in.start()  # back at the same port
        until(VALUE_LINE)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0  # the last refresh succeeded
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()
    first_error = seen.index(next(x for x in seen if x.startswith("error")))
    back = first_error + seen[first_error:].index(VALUE_LINE)
    assert set(seen[:first_error]) == {VALUE_LINE}
    assert len(seen[first_error:back]) >= 2
    assert all(
        x.startswith(f"error: cannot read {stand_in.url}/v1/status: ")
        for x in seen[first_error:back]
    )


def test_one_session_serves_every_refresh(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_rich(monkeypatch)
    assert main(["status", stand_in.url, "--watch", "0.01", "--count", "5"]) == 0
    assert capsys.readouterr().out.splitlines() == [VALUE_LINE] * 5
    assert stand_in.requests == 5 and len(stand_in.clients) == 1  # one kept-alive connection


FAILURES = [(500, b"boom"), (200, b"not json"), (200, b"[1, 2]")]


def test_failed_refreshes_count_and_the_last_one_decides_the_exit_code(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_rich(monkeypatch)
    stand_in.answers = [OK, *FAILURES, OK]
    assert main(["status", stand_in.url, "--watch", "0.01", "--count", "5"]) == 0
    url = stand_in.url
    assert capsys.readouterr().out.splitlines() == [
        VALUE_LINE,
        f"error: cannot read {url}/v1/status: HTTP 500: boom",
        f"error: cannot read {url}/v1/status: reply is not JSON: "
        "Expecting value: line 1 column 1 (char 0)",
        f"error: {url} answered JSON that is not a node's status",
        VALUE_LINE,
    ]
    stand_in.answers = [OK, (503, b"restarting")]
    assert main(["status", stand_in.url, "--watch", "0.01", "--count", "3"]) == 2
    assert (
        capsys.readouterr().out.splitlines()
        == [VALUE_LINE] + [f"error: cannot read {url}/v1/status: HTTP 503: restarting"] * 2
    )
    assert len(stand_in.clients) == 2  # one session a watch, its failures and all


def test_count_bounds_a_watch_of_a_node_that_never_answers(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_rich(monkeypatch)
    stand_in.stop()  # nothing listens on its port
    url = stand_in.url
    assert main(["status", url, "--watch", "0.01", "--count", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 3 and all(
        x.startswith(f"error: cannot read {url}/v1/status: ") for x in lines
    )


def test_a_failed_refresh_is_a_json_event_with_json(stand_in: StandIn) -> None:
    stand_in.answers = [(500, b"boom"), OK]
    first, second = main_lines(stand_in.url, "--json", "--watch", "0.01", "--count", "2")
    assert json.loads(first) == {
        "event": "error",
        "reason": f"cannot read {stand_in.url}/v1/status: HTTP 500: boom",
    }
    assert json.loads(second)["node_id"] == "fresh"


def test_a_failed_refresh_is_a_line_above_the_bars(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("FORCE_COLOR", "1")
    stand_in.answers = [OK, (500, b"boom"), OK]
    assert main(["status", stand_in.url, "--watch", "0.01", "--count", "3"]) == 0
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)
    assert f"refresh failed: cannot read {stand_in.url}/v1/status: HTTP 500: boom" in out
    assert re.search(r"big has seen\s+━+\s+0/0 dots", out.split("refresh failed")[-1]), out


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_ends_a_watch_at_once(
    stand_in: StandIn, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.answers = [OK, (status, b"send its key's bearer token")]
    assert main(["status", stand_in.url, "--watch", "0.01", "--count", "5"]) == 2
    captured = capsys.readouterr()
    assert stand_in.requests == 2
    assert f"/v1/status: HTTP {status}: send its key's bearer token" in captured.err
