"""``agentsync status --watch``: bars with rich on a terminal, plain lines otherwise.

Real nodes on loopback give the dots each peer has seen; a snapshot on
loopback ends within one poll, so the catch-up bars are shown from a stand-in
that answers a transfer's progress, refresh after refresh. ``--count`` bounds
every run; a signal ends one that has none.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def test_sigterm_ends_a_watch_cleanly(pair: tuple[Node, Node]) -> None:
    alpha, _ = pair
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentsync.cli", "status", alpha.url, "--watch", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("alpha dots")  # running: refreshes come
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()
