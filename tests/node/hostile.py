"""A hostile client, run as its own process: ``python -m tests.node.hostile MODE SOURCE PORT...``.

``slowloris`` keeps ``--connections`` connections to each port stuck: half
trickle their headers, half a body, one byte every 0.2 s, and each is
reopened when the server closes it. ``flood`` keeps ``--connections``
connections to each port posting bodies of junk (random bytes, and msgpack
that blows up as it decodes) back to back, as fast as the answers come.
Every connection comes from the address SOURCE (any of 127/8 on Linux), so
the server sees one remote. The randomness is seeded. It prints "ready" once
every connection was made once, runs until its stdin closes, then prints what
it saw as one JSON line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
from collections.abc import AsyncIterator

import msgpack

HEAD = "POST /v1/sync HTTP/1.1\r\nHost: victim\r\nContent-Type: application/x-msgpack\r\n"
TRICKLE_S = 0.2
NICENESS = 10
"""An attacker runs on its own machine: here it takes the CPU the honest nodes leave
idle, not theirs, so the test measures the server's defences, not CPU sharing."""


def junk_bodies(rng: random.Random) -> list[bytes]:
    """What the flood posts: random bytes, and (3 times in 4) a megabyte of msgpack empty
    arrays, which takes the server about 20 ms to decode and refuse."""
    empties = msgpack.packb([[] for _ in range(1_000_000)])
    return [rng.randbytes(64_000), empties, empties, empties]


class Attack:
    def __init__(self, source: str, seed: int) -> None:
        self.source = source
        self.rng = random.Random(seed)
        self.bodies: list[bytes] = []
        self.connected = 0
        """Connections made so far: the attack is ready once each task has one."""
        self.seen: collections.Counter[str] = collections.Counter()
        self.running = True
        """Checked by every loop: a cancellation can be lost in ``wait_for`` (Python < 3.12)."""

    async def connections(
        self, port: int
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """One connection after another while the attack runs, each closed after its use."""
        while self.running:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(self.source, 0)
                )
            except OSError:
                self.seen["connect failed"] += 1
                continue
            self.connected += 1
            try:
                yield reader, writer
            finally:
                writer.close()

    async def slowloris(self, port: int, n: int) -> None:
        stuck_in = "headers" if n % 2 else "body"
        start = HEAD + ("X-Slow: " if stuck_in == "headers" else "Content-Length: 100000\r\n\r\n")
        async for reader, writer in self.connections(port):
            writer.write(start.encode())
            self.seen[f"stuck in {stuck_in}"] += 1
            try:
                while self.running and not reader.at_eof():
                    await writer.drain()
                    try:
                        answer = await asyncio.wait_for(reader.read(64), TRICKLE_S)
                    except asyncio.TimeoutError:
                        writer.write(b"x")
                        continue
                    if answer:  # a refusal or a 408: the server closes it
                        self.seen[answer[:12].decode("latin-1")] += 1
                        break
            except OSError:
                self.seen["reset"] += 1

    async def flood(self, port: int, n: int) -> None:
        async for reader, writer in self.connections(port):
            try:
                while self.running:
                    body = self.rng.choice(self.bodies)
                    writer.write(f"{HEAD}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.seen[head[:12].decode("latin-1")] += 1
                    length = next(
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(length)
                    if b"close" in head.lower():
                        break
            except (OSError, asyncio.IncompleteReadError):
                self.seen["reset"] += 1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("slowloris", "flood"))
    parser.add_argument("source")
    parser.add_argument("ports", type=int, nargs="+")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    os.nice(NICENESS)
    attack = Attack(args.source, args.seed)
    run = attack.slowloris
    if args.mode == "flood":
        attack.bodies, run = junk_bodies(attack.rng), attack.flood
    tasks = [
        asyncio.create_task(run(port, n)) for port in args.ports for n in range(args.connections)
    ]
    while attack.connected < len(tasks):
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    attack.running = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(attack.seen), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
