"""``agentsync status`` and ``dump`` against a stand-in node, and every error path.

The stand-in is a stdlib HTTP server answering the JSON shapes a node serves,
so formatting and error handling are tested without a Node.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agentsync.cli import _parser, format_status, main, node_url, short_value

ROOT = Path(__file__).resolve().parents[2]

HEALTH: dict[str, Any] = {
    "node_id": "alpha",
    "cluster": "lab",
    "version": "0.1.0",
    "protocol": 1,
    "url": "http://127.0.0.1:9",
    "uptime_s": 3725.0,
    "peers": [
        {
            "url": "http://127.0.0.1:8002",
            "node_id": None,
            "state": "dead",
            "failures": 4,
            "last_ok_s_ago": None,
        },
        {
            "url": "http://127.0.0.1:8001",
            "node_id": "beta",
            "state": "alive",
            "failures": 0,
            "last_ok_s_ago": 0.25,
            "catch_up": {"receiving": [3, 10], "sending": [1, 2]},
        },
    ],
}
STATE: dict[str, Any] = {
    "node_id": "alpha",
    "cluster": "lab",
    "names": {
        "tasks": {"type": "PNCounter", "value": 7},
        "findings": {"type": "ORSet", "value": ["b", "a"]},
        "notes": {"type": "LWWMap", "value": {"k": "x" * 100}},
    },
}


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes]]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, b'{"error": "not found"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(routes: dict[str, tuple[int, bytes]]) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fake_node() -> Iterator[str]:
    yield from _serve(
        {
            "/v1/health": (200, json.dumps(HEALTH).encode()),
            "/v1/state": (200, json.dumps(STATE).encode()),
        }
    )


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentsync.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- status and dump ------------------------------------------------------------


def test_dump_prints_the_state_as_sorted_pretty_json(
    fake_node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", fake_node]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == STATE
    assert out == json.dumps(STATE, indent=2, sort_keys=True) + "\n"


def test_dump_accepts_host_port_and_a_trailing_slash(
    fake_node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", fake_node.removeprefix("http://") + "/"]) == 0
    assert json.loads(capsys.readouterr().out) == STATE


def test_status_json_is_the_health_and_the_state_for_scripts(
    fake_node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", fake_node, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"health": HEALTH, "state": STATE}


def test_status_shows_health_peers_and_names(
    fake_node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", fake_node]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["node", "alpha"]
    assert "cluster   lab" in out
    assert "agentsync 0.1.0, protocol 1" in out
    assert "1h 02m 05s" in out
    assert "peers (2)" in out
    peer_rows = [line.split() for line in lines if line.startswith("  http://")]
    assert peer_rows == [
        [
            "http://127.0.0.1:8001",
            "beta",
            "alive",
            "0",
            "0.2",
            "s",
            "ago",
            "receiving",
            "3/10,",
            "sending",
            "1/2",
        ],
        ["http://127.0.0.1:8002", "?", "dead", "4", "never", "-"],  # no catch-up under way
    ]
    assert "names (3)" in out
    name_rows = {line.split()[0]: line for line in lines[lines.index("names (3)") + 2 :]}
    assert name_rows["tasks"].split() == ["tasks", "PNCounter", "7"]
    assert name_rows["findings"].split()[:2] == ["findings", "ORSet"]
    assert name_rows["notes"].rstrip().endswith("…")
    assert list(name_rows) == ["findings", "notes", "tasks"]


def test_status_of_an_empty_node() -> None:
    health = {**HEALTH, "peers": []}
    text = format_status(health, {"names": {}})
    assert "peers (0)\n  (none)" in text
    assert "names (0)\n  (none)" in text


def test_short_value_is_compact_sorted_json_cut_to_length() -> None:
    assert short_value({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'
    cut = short_value("y" * 200, limit=10)
    assert len(cut) == 10
    assert cut.endswith("…")


# -- errors: one line on stderr, exit 2 ------------------------------------------


@pytest.mark.parametrize("command", ["status", "dump"])
def test_unreachable_node_is_one_line_exit_2(
    command: str, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, f"http://127.0.0.1:{closed_port}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_line_error(captured.err)
    assert line.startswith(f"agentsync {command}: error: cannot read http://127.0.0.1:")
    assert "Cannot connect" in line


def test_unreachable_node_from_a_real_process(closed_port: int) -> None:
    done = _cli("status", f"127.0.0.1:{closed_port}")
    assert done.returncode == 2
    assert "Cannot connect" in _one_line_error(done.stderr)


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({}, "/v1/state: HTTP 404"),
        ({"/v1/state": (500, b"{}")}, "/v1/state: HTTP 500"),
        ({"/v1/state": (200, b"<html>")}, "/v1/state: reply is not JSON"),
    ],
)
def test_a_bad_answer_is_one_line_exit_2(
    routes: dict[str, tuple[int, bytes]], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in _serve(routes):
        assert main(["dump", url]) == 2
    assert expected in _one_line_error(capsys.readouterr().err)


def test_status_of_a_server_that_is_not_a_node(capsys: pytest.CaptureFixture[str]) -> None:
    for url in _serve({"/v1/health": (200, b"[]"), "/v1/state": (200, b"[]")}):
        assert main(["status", url]) == 2
    assert "not a node's health" in _one_line_error(capsys.readouterr().err)


def test_a_node_that_never_answers_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert main(["dump", f"http://127.0.0.1:{port}", "--timeout", "0.3"]) == 2
    assert "timed out after 0.3 s" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://127.0.0.1:80",
        "http://",
        "http://127.0.0.1",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "http://127.0.0.1:80/v1/state",
        "http://[::1",
    ],
)
def test_bad_urls_are_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dump", url])
    assert exited.value.code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("agentsync dump: error: argument URL: bad URL")


def test_node_url_normalizes() -> None:
    assert node_url("localhost:80") == "http://localhost:80"
    assert node_url(" https://h:443/ ") == "https://h:443"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["no-such-command"], "invalid choice"),
        (["serve", "--port", "http"], "invalid port 'http'"),
        (["serve", "--port", "70000"], "not in 0..65535"),
        (["serve", "--peer", "nowhere"], "bad URL 'nowhere'"),
        (["serve", "--gossip-interval", "0"], "seconds must be > 0"),
        (["serve", "--gossip-interval", "nan"], "seconds must be > 0"),
        (["serve", "--fanout", "0"], "fanout must be >= 1"),
        (["serve", "--remove-after", "-1"], "seconds must be > 0"),
        (["serve", "--prune-after", "0"], "seconds must be > 0"),
        (["serve", "--durability", "some"], "invalid choice: 'some'"),
        (["serve", "--log-level", "loud"], "invalid choice: 'loud'"),
        (["status"], "the following arguments are required: URL"),
        (["dump", "http://h:1", "--timeout", "-1"], "seconds must be > 0"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "error:" in line
    assert fragment in line


def test_help_lists_every_command() -> None:
    done = _cli("--help")
    assert done.returncode == 0
    for command in ("serve", "mcp", "status", "dump", "demo"):
        assert command in done.stdout


def _commands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_has_help_for_itself_and_each_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: agentsync {command}")
    sub = _commands()[command]
    assert sub.description and " ".join(sub.description.split()[:3]) in " ".join(out.split())
    undocumented = [a.dest for a in sub._actions if not a.help]
    assert not undocumented
