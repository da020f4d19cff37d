"""``agentsync serve`` on test hosts in namespaces, each with a stand-in agent.

``HostNode(hosts, i, logs)`` starts ``agentsync serve --host 0.0.0.0 --port
7000 --id h<i>`` in host ``i``'s namespace (with ``--mdns`` unless other
arguments are given), and ``tests.netns_agent`` beside it, through which the
test writes on that host and reads that host's node. Everything is killed
with the hosts at teardown. Used by the multi-host tests and by
``bench/discovery.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.netns import Hosts, Lines, wait_until

ROOT = Path(__file__).resolve().parent.parent
PORT = 7000
START_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 10.0


class HostNode:
    """One host's ``agentsync serve`` process and its agent."""

    def __init__(
        self,
        hosts: Hosts,
        i: int,
        logs: Path,
        *,
        cluster: str = "blue",
        args: Sequence[str] = ("--mdns",),
        gossip_interval: float = 0.2,
    ) -> None:
        self.hosts, self.i, self.cluster = hosts, i, cluster
        self.node_id = f"h{i}"
        self.args = [*args, "--gossip-interval", str(gossip_interval)]
        self.log = logs / f"{self.node_id}.log"
        self.serve: subprocess.Popen[str] | None = None
        self.start()
        self.agent = hosts.run(
            i,
            [sys.executable, "-m", "tests.netns_agent", f"http://127.0.0.1:{PORT}", cluster],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(logs / f"{self.node_id}-agent.log").open("w"),
            text=True,
            cwd=ROOT,
        )
        assert self.agent.stdout is not None
        self._answers = Lines(self.agent.stdout)
        self._read = 0

    def url(self, bridge: int | None = None) -> str:
        """The node's URL on ``bridge`` (by default its host's first)."""
        return f"http://{self.hosts.addr(self.i, bridge)}:{PORT}"

    def start(self) -> None:
        """Start (or restart) the ``agentsync serve`` process."""
        argv = [sys.executable, "-m", "agentsync.cli", "serve", "--host", "0.0.0.0"]
        argv += ["--port", str(PORT), "--id", self.node_id, "--cluster", self.cluster]
        argv += ["--log-level", "info", *self.args]
        with self.log.open("a") as log:
            self.serve = self.hosts.run(
                self.i, argv, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT
            )

    def kill(self) -> None:
        """SIGKILL the node (not its agent), as a crash would."""
        assert self.serve is not None
        os.killpg(self.serve.pid, signal.SIGKILL)
        self.serve.wait()

    def ask(self, command: str) -> Any:
        """The agent's JSON answer to ``command``."""
        assert self.agent.stdin is not None
        if self._read == 0:  # the first line says the agent is up
            self._next(START_TIMEOUT_S)
        self.agent.stdin.write(command + "\n")
        self.agent.stdin.flush()
        return self._next(ANSWER_TIMEOUT_S)

    def _next(self, timeout: float) -> Any:
        if not wait_until(lambda: len(self._answers()) > self._read, timeout):
            raise AssertionError(f"{self.node_id}'s agent did not answer within {timeout} s")
        line = self._answers()[self._read]
        self._read += 1
        return json.loads(line)

    def add(self, name: str, *items: str) -> None:
        """Write ``items`` into the set ``name`` on this host."""
        assert self.ask(f"add {name} {' '.join(items)}") == {"ok": True}

    def health(self) -> dict[str, Any]:
        """The node's ``GET /v1/health`` (empty while it is down)."""
        answer = self.ask("get /v1/health")
        return {} if "error" in answer else dict(answer)

    def items(self, name: str) -> set[str]:
        """The items of the set ``name`` in the node (empty while it is down)."""
        answer = self.ask("get /v1/state")
        value = answer.get("names", {}).get(name, {}).get("value", [])
        return set(value)

    def reached(self) -> set[str]:
        """The test hosts this node holds alive and has exchanged with at least once.

        A peer named by another's gossip is alive from the start, before it
        is reached; if it never answers it is dropped, not judged dead.
        """
        return {
            peer["url"]
            for peer in self.health().get("peers", [])
            if not peer["url"].startswith("http://127.")
            and peer["state"] == "alive"
            and peer["last_ok_s_ago"] is not None
        }

    def states(self) -> dict[str, str]:
        """Each member's state by node id, for the members that are test hosts."""
        return {
            peer["url"]: peer["state"]
            for peer in self.health().get("peers", [])
            if not peer["url"].startswith("http://127.")
        }

    def describe(self) -> str:
        """What to print when a test fails: health and the end of the log."""
        try:
            health = json.dumps(self.health().get("peers"))
        except AssertionError as exc:
            health = str(exc)
        tail = "\n".join(self.log.read_text().splitlines()[-15:]) if self.log.exists() else ""
        return f"--- {self.node_id} peers: {health}\n{tail}"


def wait_for(condition: Callable[[], bool], nodes: Sequence[HostNode], what: str,
              timeout: float) -> float:  # fmt: skip
    """Poll until ``condition`` holds; return the seconds it took, or fail saying why."""
    start = time.monotonic()
    if not wait_until(condition, timeout, interval=0.05):
        report = "\n".join(node.describe() for node in nodes)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{report}")
    return time.monotonic() - start
