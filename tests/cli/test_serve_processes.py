"""``agentsync serve`` as real processes: convergence, restarts, signals, errors.

Each test starts ``python -m agentsync.cli serve --port 0`` processes and reads
the URL from the first line they print. The processes have no write API, so
an in-test Node (in a background thread) peers with them and writes; every
check polls ``GET /v1/state`` (or runs ``agentsync dump``) until a deadline,
never sleeping and hoping. Every process is killed in the fixture's teardown.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agentsync.cli import MAX_SECRET_FILE_BYTES, CliError, main, read_secret
from agentsync.node import Node
from agentsync.transport.tls import fingerprint, node_uri
from tests.tlscerts import Pki

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = "0.1"
START_DEADLINE_S = 20.0
CONVERGE_DEADLINE_S = 15.0
STOP_DEADLINE_S = 10.0
URL_LINE = re.compile(r"^agentsync node (\S+) serving (https?://\S+) \(cluster (\S+)\)$")

T = TypeVar("T")


class Served:
    """One ``agentsync serve`` process and the lines it prints."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentsync.cli", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=ROOT,
        )
        self.log = log
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.node_id = self.url = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no line within {timeout} s; stderr: {self.log.read_text()!r}"
            ) from None

    def wait_started(self) -> Served:
        line = self.next_line(START_DEADLINE_S)
        match = URL_LINE.match(line)
        assert match is not None, line
        self.node_id, self.url = match.group(1), match.group(2)
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and return the exit code, within the deadline."""
        self.proc.send_signal(signum)
        return self.proc.wait(STOP_DEADLINE_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``agentsync serve`` processes (waiting for their URL); kill all at teardown."""
    started: list[Served] = []

    def start(*args: str, wait: bool = True) -> Served:
        served = Served([*args], tmp_path / f"serve{len(started)}.err")
        started.append(served)
        return served.wait_started() if wait else served

    try:
        yield start
    finally:
        for served in started:
            served.kill()


def get_json(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=5) as response:
        return json.loads(response.read())


def values(url: str) -> dict[str, Any]:
    """name -> value of a node's ``/v1/state``."""
    state = get_json(url, "/v1/state")
    return {name: entry["value"] for name, entry in state["names"].items()}


def eventually(probe: Callable[[], T | None], what: str, timeout: float = CONVERGE_DEADLINE_S) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (urllib.error.URLError, ConnectionError) as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentsync.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


def test_a_line_of_three_converges_and_a_restarted_node_catches_up(
    serve: Callable[..., Served],
) -> None:
    # A knows B, B knows C: what is written at A reaches C only through B.
    c = serve("--id", "c", "--cluster", "lab", "--gossip-interval", INTERVAL)
    b = serve("--id", "b", "--cluster", "lab", "--gossip-interval", INTERVAL, "--peer", c.url)
    a = serve("--id", "a", "--cluster", "lab", "--gossip-interval", INTERVAL, "--peer", b.url)
    assert (a.node_id, b.node_id, c.node_id) == ("a", "b", "c")

    node = Node.start_background("writer", cluster="lab", peers=[a.url], gossip_interval=0.1)
    try:
        node.counter("tasks").increment(5)
        node.set("findings").add("cache")
        node.lwwmap("status")["writer"] = "busy"
        node.flag("ready").enable()
        first = {
            "tasks": 5,
            "findings": ["cache"],
            "status": {"writer": "busy"},
            "ready": True,
        }
        for served in (a, b, c):
            eventually(lambda s=served: values(s.url) == first, f"{served.node_id} converges")

        dumped = cli("dump", c.url)
        assert dumped.returncode == 0, dumped.stderr
        state = json.loads(dumped.stdout)
        assert state["node_id"] == "c"
        assert state["cluster"] == "lab"
        assert state["names"]["tasks"] == {"type": "PNCounter", "value": 5}
        assert state["names"]["findings"] == {"type": "ORSet", "value": ["cache"]}
        assert dumped.stdout == json.dumps(state, indent=2, sort_keys=True) + "\n"

        # C stops cleanly; the others carry on writing without it.
        assert c.stop(signal.SIGTERM) == 0
        assert c.next_line(STOP_DEADLINE_S) == "agentsync node c stopped"
        node.counter("tasks").increment(2)
        node.set("findings").add("gc")
        second = {**first, "tasks": 7, "findings": ["cache", "gc"]}
        for served in (a, b):
            eventually(lambda s=served: values(s.url) == second, f"{served.node_id} converges")
        health = get_json(b.url, "/v1/health")
        [to_c] = health["peers"]
        eventually(
            lambda: get_json(b.url, "/v1/health")["peers"][0]["failures"] >= 1,
            "b notices that c is down",
        )

        # C comes back at the same address with no state; B's gossip refills it.
        c2 = serve("--id", "c", "--cluster", "lab", "--gossip-interval", INTERVAL,
                   "--port", str(c.port))  # fmt: skip
        assert c2.url == c.url == to_c["url"]
        eventually(lambda: values(c2.url) == second, "the restarted c catches up")
        eventually(
            lambda: get_json(b.url, "/v1/health")["peers"][0]["failures"] == 0,
            "b's link to c recovers",
        )

        status = cli("status", b.url)
        assert status.returncode == 0, status.stderr
        out = status.stdout
        assert out.splitlines()[0].split() == ["node", "b"]
        assert "cluster   lab" in out
        row = rf"^  {re.escape(c.url)}\s+c\s+alive\s+0\s+\d+\.\d s ago\s+-$"  # no catch-up
        assert re.search(row, out, re.M), out
        assert re.search(r"^  tasks\s+PNCounter\s+7$", out, re.M), out
        assert re.search(r'^  findings\s+ORSet\s+\["cache", "gc"\]$', out, re.M), out
        assert re.search(r'^  status\s+LWWMap\s+\{"writer": "busy"\}$', out, re.M), out
        assert re.search(r"^  ready\s+EWFlag\s+true$", out, re.M), out
    finally:
        node.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_serve_cleanly(signum: int, serve: Callable[..., Served]) -> None:
    served = serve("--id", "solo")
    assert get_json(served.url, "/v1/health")["node_id"] == "solo"
    assert served.stop(signum) == 0
    assert served.next_line(STOP_DEADLINE_S) == "agentsync node solo stopped"
    err = served.log.read_text()
    assert "Traceback" not in err
    assert "Unclosed" not in err  # the client session and the server were closed


def test_serve_json_prints_its_first_and_last_line_as_json_objects(
    serve: Callable[..., Served],
) -> None:
    served = serve("--json", "--id", "solo", "--cluster", "lab", "--port", "0", wait=False)
    first = json.loads(served.next_line(START_DEADLINE_S))
    assert first.keys() == {"event", "node_id", "url", "cluster"}
    assert (first["event"], first["node_id"], first["cluster"]) == ("serving", "solo", "lab")
    health = get_json(first["url"], "/v1/health")  # the URL of --port 0, ready to use
    assert (health["node_id"], health["url"]) == ("solo", first["url"])
    assert served.stop() == 0
    assert json.loads(served.next_line(STOP_DEADLINE_S)) == {"event": "stopped", "node_id": "solo"}


def test_status_counts_a_dead_peers_failures(serve: Callable[..., Served]) -> None:
    dead = serve()
    dead_url = dead.url
    assert dead.stop() == 0  # now nothing listens at dead_url
    alive = serve("--peer", dead_url, "--gossip-interval", INTERVAL)
    eventually(
        lambda: get_json(alive.url, "/v1/health")["peers"][0]["failures"] >= 2,
        "the dead peer's failures are counted",
    )
    status = cli("status", alive.url)
    assert status.returncode == 0, status.stderr
    row = re.search(
        rf"^  {re.escape(dead_url)}\s+\?\s+(?:suspect|dead)\s+(\d+)\s+never\s+-$",
        status.stdout,
        re.M,
    )
    assert row is not None, status.stdout
    assert int(row.group(1)) >= 2


def test_a_port_in_use_is_one_line_exit_2(serve: Callable[..., Served]) -> None:
    holder = serve()
    done = cli("serve", "--port", str(holder.port))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"agentsync serve: error: cannot serve on 127.0.0.1:{holder.port}")
    assert "in use" in lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--id", ""], "node_id must be"),
        (["--id", "x" * 300], "node_id must be"),
        (["--cluster", ""], "cluster must be"),
        (["--exchange-timeout", "601"], "exchange_timeout must be"),
    ],
    ids=["empty-id", "long-id", "empty-cluster", "long-exchange-timeout"],
)
def test_a_bad_node_setting_is_one_line_exit_2(args: list[str], fragment: str) -> None:
    done = cli("serve", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("agentsync serve: error: ")
    assert fragment in lines[0]


def test_a_data_dir_that_is_a_file_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    done = cli("serve", "--data-dir", str(blocker))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"agentsync serve: error: cannot use {blocker}: ")


def test_serve_with_a_secret_file_seals_and_status_needs_it(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a lab passphrase\n")
    b = serve("--id", "b", "--cluster", "lab", "--secret-file", str(secret),
              "--gossip-interval", INTERVAL)  # fmt: skip
    a = serve("--id", "a", "--cluster", "lab", "--secret-file", str(secret),
              "--gossip-interval", INTERVAL, "--peer", b.url)  # fmt: skip
    args = ["--cluster", "lab", "--secret-file", str(secret)]

    def a_sees_b_alive() -> bool:
        done = cli("status", a.url, *args)
        return done.returncode == 0 and re.search(rf"{re.escape(b.url)}\s+b\s+alive", done.stdout)

    eventually(a_sees_b_alive, "a exchanges with b, sealed")
    assert get_json(a.url, "/v1/health") == {"alive": True}  # nothing more without the token
    for command in ("status", "dump"):
        done = cli(command, a.url)
        assert done.returncode == 2
        assert "HTTP 401" in done.stderr and "bearer token" in done.stderr
    wrong = cli("dump", a.url, "--secret-file", str(secret))  # the default cluster's key
    assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr
    dumped = cli("dump", a.url, *args)
    assert dumped.returncode == 0, dumped.stderr
    assert json.loads(dumped.stdout)["node_id"] == "a"


def test_serve_mid_rotation_seals_with_its_first_secret_file_and_opens_with_every_one(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    """A rolling restart rotates a cluster of serve processes: old and new keys meet."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("the old lab passphrase\n")
    new.write_text("the new lab passphrase\n")
    b = serve("--id", "b", "--cluster", "lab", "--secret-file", str(new),
              "--secret-file", str(old), "--gossip-interval", INTERVAL)  # fmt: skip
    a = serve("--id", "a", "--cluster", "lab", "--secret-file", str(old),
              "--secret-file", str(new), "--gossip-interval", INTERVAL,
              "--peer", b.url)  # fmt: skip

    def a_sees_b_alive() -> bool:
        done = cli("status", a.url, "--cluster", "lab", "--secret-file", str(new))
        return done.returncode == 0 and re.search(rf"{re.escape(b.url)}\s+b\s+alive", done.stdout)

    eventually(a_sees_b_alive, "a (sealing with the old key) and b (the new one) exchange")
    for secret in (old, new):  # either key's token reads either node
        done = cli("dump", b.url, "--cluster", "lab", "--secret-file", str(secret))
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read the secret file"),
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"short\n", "no usable secret"),
        (b"\xff" * 8, "no usable secret"),
        # cut at 64 KiB, this file would hold the passphrase "a lab pa", not the one written
        (b"\n" * ((64 << 10) - 8) + b"a lab passphrase\n", "is larger than 65536 bytes"),
    ],
    ids=["missing", "empty", "blank", "short-passphrase", "short-bytes", "too-large"],
)
def test_a_bad_secret_file_is_one_line_exit_2(
    content: bytes | None, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    for args in (["serve"], ["status", "127.0.0.1:9"], ["dump", "127.0.0.1:9"]):
        done = cli(*args, "--secret-file", str(path))
        assert done.returncode == 2, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert fragment in lines[0] and str(path) in lines[0]


def test_a_secret_file_is_taken_up_to_its_limit_and_refused_past_it(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    passphrase = b"a lab passphrase"
    path.write_bytes(b"\n" * (MAX_SECRET_FILE_BYTES - len(passphrase)) + passphrase)
    assert read_secret(str(path)) == "a lab passphrase"
    path.write_bytes(b"\n" + path.read_bytes())
    with pytest.raises(CliError, match=f"is larger than {MAX_SECRET_FILE_BYTES} bytes"):
        read_secret(str(path))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``agentsync ARGS`` in this process (no interpreter start-up): code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_serve_with_mutual_tls_and_status_over_https(
    serve: Callable[..., Served], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki(tmp_path)
    (a_cert, a_key), (b_cert, b_key), (me_cert, me_key) = (
        pki.issue(name) for name in ("a", "b", "me")
    )
    mutual = ["--tls-ca", pki.ca, "--tls-require-client-cert", "--gossip-interval", INTERVAL]
    b = serve("--id", "b", "--tls-cert", b_cert, "--tls-key", b_key, *mutual)
    a = serve("--id", "a", "--tls-cert", a_cert, "--tls-key", a_key, *mutual, "--peer", b.url)
    assert a.url.startswith("https://127.0.0.1:")
    me = ["--tls-ca", pki.ca, "--tls-cert", me_cert, "--tls-key", me_key]

    def a_sees_b_alive() -> bool:
        code, out, _ = run_cli(capsys, "status", a.url, *me, "--tls-pin", fingerprint(a_cert))
        return code == 0 and bool(re.search(rf"{re.escape(b.url)}\s+b\s+alive", out))

    eventually(a_sees_b_alive, "a exchanges with b over mutual TLS")
    for refused in (
        ["--tls-ca", pki.ca],  # no client certificate
        [*me, "--tls-pin", fingerprint(b_cert)],  # a's certificate is not pinned
    ):
        code, out, err = run_cli(capsys, "dump", a.url, *refused)
        assert code == 2, out
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("agentsync dump: error: cannot read "), err
    code, _, err = run_cli(capsys, "dump", a.url.replace("https://", "http://"), *me)
    assert code == 2 and "https:// URL" in err


def test_bad_tls_options_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.pem")
    for args in (
        ["serve", "--tls-cert", missing],
        ["serve", "--tls-ca", missing],
        ["status", "https://127.0.0.1:9", "--tls-ca", missing],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and missing in lines[0], err
    code, _, err = run_cli(capsys, "serve", "--tls-pin", "abc")
    assert code == 2 and "not a SHA-256 fingerprint" in err
    code, _, err = run_cli(capsys, "serve", "--tls-ca", Pki(tmp_path).ca)  # nothing to serve
    assert code == 2 and "needs a certificate" in err


def test_bind_node_ids_is_checked_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.issue("b", uris=(node_uri("b"),))
    mutual = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", pki.ca, "--tls-bind-node-ids"]
    code, _, err = run_cli(capsys, "serve", *mutual)  # no --tls-require-client-cert
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "bind_node_ids needs require_client_cert" in err
    code, _, err = run_cli(capsys, "serve", "--id", "a", *mutual, "--tls-require-client-cert")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "names node id 'b', not 'a'" in err


def test_serve_with_an_acl_file_and_a_read_only_observer(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    """``--acl F`` limits the observer ``watch`` (``--read-only``) to the pub* names."""
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({"watch": {"read": ["pub*"]}, "*": {"write": ["*"]}}))
    hub = serve("--id", "hub", "--cluster", "lab", "--gossip-interval", INTERVAL,
                "--acl", str(acl))  # fmt: skip
    watch = serve("--id", "watch", "--cluster", "lab", "--gossip-interval", INTERVAL,
                  "--read-only", "--peer", hub.url)  # fmt: skip
    node = Node.start_background("writer", cluster="lab", peers=[hub.url], gossip_interval=0.1)
    try:
        node.set("pub-notes").add("hello")
        node.register("secret").set("the plan")
        eventually(lambda: "secret" in values(hub.url), "the hub takes every name")
        eventually(lambda: values(watch.url) == {"pub-notes": ["hello"]}, "watch sees pub*")
        assert values(hub.url) == {"pub-notes": ["hello"], "secret": "the plan"}
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read the ACL file"),
        ("{not json", "is not JSON"),
        ("[]", "must hold an object"),
        ('{"watch": {"read": ["pub*"], "write": ["x"]}}', "read-only observer"),
        ('{"watch": {"delete": ["x"]}}', "unknown rights"),
    ],
    ids=["missing", "not-json", "not-an-object", "limited-writer", "unknown-right"],
)
def test_a_bad_acl_file_is_one_line_exit_2(
    content: str | None, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / "acl.json"
    if content is not None:
        path.write_text(content)
    done = cli("serve", "--acl", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("agentsync serve: error: ") and fragment in lines[0], lines[0]
