#!/usr/bin/env python3
"""What authentication and encryption cost per sync exchange: sealed against plain, one run.

Run ``python bench/security.py [--json PATH] [--quick] [--rounds N] [--exchanges N]``.

What it measures (issue 6, "Speed"), for messages of 1 KiB and 100 KiB:

* **exchange**: one real push-pull exchange over HTTP on loopback. The
  requester is a Node that is never started (its engine makes the requests)
  and a ``SyncClient``; it writes one value of the message size (random
  bytes, so DEFLATE cannot shrink them) into a register, then sends the
  engine's request, and merges the reply. The responder is a started Node
  (gossip every hour: nothing else runs) answering at ``/v1/sync``. *plain*
  has no secret; *sealed* has one on both sides: the request and the reply
  are sealed, opened, authenticated and replay-checked (``agentsync.security``).
  Each exchange is timed from the write to the merged reply.
* **envelope**: the pure cost of the envelope, without sockets: a
  requester's ``seal_request`` of a body of the message size, the
  responder's ``open_request`` (the tag and the replay check) and
  ``seal_response`` of a 128-byte reply, and the requester's
  ``open_response``. Its *pure ratio* is (plain exchange + envelope) /
  plain exchange, paired within a round: the exchange ratio the envelope
  alone would give, free of the sockets' noise.

How: every case warms up, then ``--rounds`` rounds run interleaved (each
round visits every case, its order rotated round by round, so drifting load
hits all alike); a round times ``--exchanges`` exchanges per case and keeps
their median. Figures are the median and min-max of the rounds; a ratio
sealed/plain is paired within a round, then its median and min-max. The
bar: the exchange ratio <= 1.2 at both sizes. The garbage collector stays
on, as in real use. The script exits 0 unless a case crashed; the bar check
is informational.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # agentsync from this checkout

from benchlib import environment, git_info, loadavg, positive, report_header, write_json

from agentsync import Node
from agentsync.security import Channel, Keyring
from agentsync.sync import decode_message, encode_message
from agentsync.transport import SyncClient

SIZES = {"1KiB": 1 << 10, "100KiB": 100 << 10}
MODES = ("plain", "sealed")
REPLY_BYTES = 128
BAR_RATIO = 1.2
DEFAULT_ROUNDS = 7
DEFAULT_EXCHANGES = 200
WARMUP = 20
SECRET = b"bench secret of thirty-two bytes"
CLUSTER = "bench"
IDLE_GOSSIP_S = 3600.0


class Requester:
    """One side that writes and asks: an unstarted Node's engine and a client (sealed or not)."""

    def __init__(self, name: str, mode: str, size: int, rng: random.Random) -> None:
        self.node = Node(name, cluster=CLUSTER)
        self.mode = mode
        self.size = size
        self.rng = rng
        self.channel = Channel(Keyring(SECRET, cluster=CLUSTER), name) if mode == "sealed" else None
        self.client = SyncClient(timeout=10.0, channel=self.channel)
        self.peer_id: str | None = None

    def write(self) -> bytes:
        """One new value of the message size; the encoded request that carries it."""
        self.node.register("blob").set(self.rng.randbytes(self.size))
        return encode_message(self.node._engine.request(self.peer_id))

    def merge(self, reply: bytes) -> None:
        response = decode_message(reply)
        self.node._engine.on_response(response)
        self.peer_id = response.sender


async def exchange_once(requester: Requester, url: str) -> float:
    began = time.perf_counter()
    reply = await requester.client.exchange(url, requester.write())
    requester.merge(reply)
    return time.perf_counter() - began


def envelope_once(body: bytes, reply: bytes, requester: Channel, responder: Channel) -> float:
    """Seal and open one request and its reply, as both ends of an exchange do."""
    began = time.perf_counter()
    sealed, header = requester.seal_request(body)
    _, seen = responder.open_request(sealed)
    requester.open_response(responder.seal_response(reply, seen.raw), header)
    return time.perf_counter() - began


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "rounds": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": values}  # fmt: skip


async def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    rng = random.Random(6)
    responders = {
        "plain": Node("plain-b", cluster=CLUSTER, gossip_interval=IDLE_GOSSIP_S),
        "sealed": Node("sealed-b", cluster=CLUSTER, gossip_interval=IDLE_GOSSIP_S, secret=SECRET),
    }
    for node in responders.values():
        await node.start()
    requesters = {
        (size, mode): Requester(f"{mode}-a-{size}", mode, SIZES[size], rng)
        for size in SIZES
        for mode in MODES
    }
    channels = [Channel(Keyring(SECRET, cluster=CLUSTER), name) for name in ("a", "b")]
    bodies = {size: rng.randbytes(n) for size, n in SIZES.items()}
    reply = rng.randbytes(REPLY_BYTES)
    cases = [("exchange", size, mode) for size in SIZES for mode in MODES]
    cases += [("envelope", size, "sealed") for size in SIZES]
    per_round: dict[str, list[float]] = {"/".join(case): [] for case in cases}
    errors: dict[str, str] = {}

    async def measure(case: tuple[str, str, str], count: int) -> float:
        kind, size, mode = case
        times: list[float] = []
        for _ in range(count):
            if kind == "exchange":
                times.append(await exchange_once(requesters[size, mode], responders[mode].url))
            else:
                times.append(envelope_once(bodies[size], reply, *channels))
        return statistics.median(times)

    try:
        for requester in requesters.values():
            await requester.client.start()
        for case in cases:
            await measure(case, WARMUP)
        for r in range(args.rounds):
            k = r % len(cases)
            for case in cases[k:] + cases[:k]:
                name = "/".join(case)
                if name in errors:
                    continue
                gc.collect()
                try:
                    per_round[name].append(await measure(case, args.exchanges) * 1e6)
                except Exception:
                    errors[name] = traceback.format_exc()
                    log(f"ERROR in {name}:\n{errors[name]}")
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{name} {values[-1]:.0f} us" for name, values in per_round.items() if values
            ))  # fmt: skip
    finally:
        for requester in requesters.values():
            await requester.client.close()
        for node in responders.values():
            await node.stop()
    assert responders["sealed"].auth_failures == 0
    return {"per_round": per_round, "errors": errors}


def build_rows(per_round: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per size: the exchanges, their paired ratio and the bar, the envelope alone."""
    rows = []
    for size in SIZES:
        plain, sealed = per_round[f"exchange/{size}/plain"], per_round[f"exchange/{size}/sealed"]
        envelope = per_round[f"envelope/{size}/sealed"]
        ratio = summary([s / p for p, s in zip(plain, sealed, strict=False)])
        ok = None if ratio["median"] is None else ratio["median"] <= BAR_RATIO
        rows.append(
            {
                "size": size,
                "plain_us": summary(plain),
                "sealed_us": summary(sealed),
                "ratio_sealed_plain": ratio,
                "envelope_us": summary(envelope),
                "pure_ratio": summary([(p + e) / p for p, e in zip(plain, envelope, strict=False)]),
                "bar": BAR_RATIO,
                "status": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            }
        )
    return rows


def _span(s: dict[str, Any], fmt: str) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def render(rows: list[dict[str, Any]]) -> str:
    lines = [["size", "plain us", "sealed us", "sealed/plain", "bar 1.2", "envelope us",
              "pure ratio"]]  # fmt: skip
    lines.extend(
        [
            row["size"],
            _span(row["plain_us"], ".0f"),
            _span(row["sealed_us"], ".0f"),
            _span(row["ratio_sealed_plain"], ".3f"),
            row["status"],
            _span(row["envelope_us"], ".1f"),
            _span(row["pure_ratio"], ".3f"),
        ]
        for row in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join([out[0], "  ".join("-" * w for w in widths), *out[1:]])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sealed against plain sync exchanges.")
    parser.add_argument("--json", metavar="PATH", help="write every round and the medians here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 10")
    parser.add_argument("--rounds", type=positive, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--exchanges", type=positive, help=f"exchanges per case and round ({DEFAULT_EXCHANGES})"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else DEFAULT_ROUNDS)
    args.exchanges = args.exchanges or (10 if args.quick else DEFAULT_EXCHANGES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(text, flush=True)

    git = git_info()
    load_before = loadavg()
    log(f"{args.rounds} rounds of {args.exchanges} exchanges per case, sizes "
        f"{', '.join(SIZES)}; plain against sealed (AES-256-GCM, replay-checked)")  # fmt: skip
    measured: Awaitable[dict[str, Any]] = run(args, log)
    result = asyncio.run(measured)
    rows = build_rows(result["per_round"])
    log("")
    log("µs per exchange, median (min-max) of the rounds:")
    log(render(rows))
    checks = [
        {"size": row["size"], "ratio": row["ratio_sealed_plain"]["median"], "bar": BAR_RATIO,
         "status": row["status"]}
        for row in rows
    ]  # fmt: skip
    log("")
    for check in checks:
        log(f"exchange {check['size']}: sealed/plain {check['ratio']:.3f} <= {BAR_RATIO}: "
            f"{check['status']}")  # fmt: skip
    if args.json:
        report = {
            **report_header(argv),
            "config": {
                "quick": args.quick,
                "rounds": args.rounds,
                "exchanges": args.exchanges,
                "warmup": WARMUP,
                "sizes": SIZES,
                "aead": "AES-256-GCM",
            },
            **environment(
                versions=("cryptography", "aiohttp"),
                loadavg_before=load_before,
                loadavg_after=loadavg(),
            ),
            "git": git,
            "per_round_us": result["per_round"],
            "rows": rows,
            "checks": checks,
            "errors": result["errors"],
            "wall_seconds": time.perf_counter() - began,
        }
        log(f"wrote {write_json(args.json, report)}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
