"""Two honest nodes under attack on loopback: a slowloris client and a 50-connection
flood (each its own process, on its own address) do not stop them converging in
about their usual time.

Each trial is one write on one node, timed until the other holds it. The
same trials run first without the attack (the usual time, on this machine,
now) and then under it, in one test. Measured on a loaded 2-core machine:
about 20 ms usually (the eager push) and a median of 0.3-0.5 s (at most
1.1 s) under attack, about two gossip rounds; before the transport's limits
and turns the two nodes did not converge within 20 s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from agentsync import Node
from tests.node.helpers import eventually, run, started, stop_all

SLOWLORIS = "127.0.0.2"
FLOOD = "127.0.0.3"
TRIALS = 8
INTERVAL = 0.2
"""The Node's default gossip interval."""
ROOT = Path(__file__).resolve().parent.parent.parent


async def trial_times(a: Node, b: Node, name: str) -> list[float]:
    """Seconds from a write on one node until the other holds it, alternating writers."""
    times = []
    for trial in range(TRIALS):
        writer, reader = (a, b) if trial % 2 == 0 else (b, a)
        writer.counter(name).increment()
        began = time.monotonic()
        await eventually(lambda r=reader, w=writer: r.value == w.value, f"{name} trial {trial}")
        times.append(time.monotonic() - began)
    return times


async def attacker(
    mode: str, source: str, connections: int, *nodes: Node
) -> asyncio.subprocess.Process:
    """An attacker process on ``connections`` connections to each node, each made once."""
    ports = [str(node.port) for node in nodes]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.node.hostile", mode, source, *ports,
        "--connections", str(connections),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 20.0)
    assert line == b"ready\n", line
    return process


async def called_off(process: asyncio.subprocess.Process) -> Counter[str]:
    """Stop an attacker (it ends when its stdin closes); what it saw."""
    assert process.stdin is not None
    process.stdin.close()
    out, _ = await asyncio.wait_for(process.communicate(), 10.0)
    return Counter(json.loads(out))


def test_slowloris_and_a_flood_do_not_stop_two_honest_nodes_converging() -> None:
    async def main() -> tuple[list[float], list[float], Counter[str], Counter[str]]:
        a = Node("a", gossip_interval=INTERVAL)
        await a.start()
        b = Node("b", gossip_interval=INTERVAL, peers=[a.url])
        nodes = await started(b)
        nodes.append(a)
        attackers: list[asyncio.subprocess.Process] = []
        try:
            await eventually(lambda: len(a.peers) == 1, "a learns b")
            usual = await trial_times(a, b, "calm")
            errors = [node.metrics.errors for node in (a, b)]
            attackers = [
                await attacker("slowloris", SLOWLORIS, 100, a, b),
                await attacker("flood", FLOOD, 50, a, b),
            ]
            gates = [node._server.gate for node in (a, b) if node._server is not None]
            await eventually(
                lambda: all(
                    gate.connections(SLOWLORIS) == gate.limits.connections_per_remote
                    and gate.requests(SLOWLORIS) == gate.limits.requests_per_remote
                    and node.metrics.errors > before + 100  # the flood's refusals and 400s
                    for gate, node, before in zip(gates, (a, b), errors, strict=True)
                ),
                "the attack holds all it may of both nodes, and the flood is refused",
            )
            attacked = await trial_times(a, b, "attacked")
            slowloris, flood = [await called_off(process) for process in attackers]
            return usual, attacked, slowloris, flood
        finally:
            for process in attackers:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await stop_all(nodes)

    usual, attacked, slowloris, flood = run(main())
    print(f"usual {usual}\nattacked {attacked}\nslowloris {slowloris}\nflood {flood}")
    assert slowloris["HTTP/1.1 429"] > 0 and slowloris["stuck in headers"] >= 100
    assert flood["HTTP/1.1 429"] > 0 and flood["HTTP/1.1 400"] > 0
    assert statistics.median(attacked) <= statistics.median(usual) + 5 * INTERVAL
    assert max(attacked) <= max(usual) + 15 * INTERVAL
