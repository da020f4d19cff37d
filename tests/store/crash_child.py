"""The process ``tests/store/test_crash.py`` kills: a Node with a data_dir, writing.

``python -m tests.store.crash_child DATA_DIR --round R --seed S [options]``
(cwd the repo root) imports agentsync, waits for the line ``go`` on stdin
(so the test can start the next child while it checks the last one), starts
``Node("child", data_dir=DATA_DIR)`` in the background, prints ``ready URL``,
then writes until it is killed:

- ``add R.K``: ``node.set("items").add("R.K")`` returned;
- ``inc R.K``: ``node.counter("hits").increment()`` returned;
- a ``with node.batch():`` block of several of those prints one such line
  per write once the block has ended (never before).

With ``--peer URL`` it gossips with the node there and, after every merge
it observes that changed the set ``"peer"``, prints ``peer N``: the number
of the peer's items it holds then (counts only grow; a printed count is
what a merge already logged, as the store logs a merge before anyone can
see it). Every line goes out whole in one write, flushed, so a line the
test reads is a write the child acknowledged.

The writes are drawn from ``random.Random(seed)``; only their timing and the
kill are not reproducible. The child exits by itself after ``--max-seconds``
(a safety net should the test die without killing it), on a broken pipe, and
if stdin ends before ``go``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time

import agentsync.node
from agentsync.node import Change, Node

NODE_ID = "child"
ITEMS = "items"
HITS = "hits"
PEER_ITEMS = "peer"
MAX_BATCH = 8
"""The most writes in one batch: at most this many committed writes go unprinted."""

_out = threading.Lock()


def emit(*lines: str) -> None:
    """Print whole lines in one flushed write (the writer and the loop thread both print)."""
    with _out:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--durability", choices=("full", "normal"), default="full")
    parser.add_argument("--peer", default=None)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between writes")
    parser.add_argument(
        "--compact-bytes", type=int, default=None, help="fold the log into a snapshot this soon"
    )
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()

    if args.compact_bytes is not None:  # compactions often, so kills land in some
        agentsync.node.COMPACT_MIN_BYTES = args.compact_bytes
    threading.Timer(args.max_seconds, os._exit, (3,)).start()
    if sys.stdin.readline() != "go\n":
        os._exit(0)

    node = Node.start_background(
        NODE_ID,
        data_dir=args.data_dir,
        durability=args.durability,
        gossip_interval=0.05,
        peers=[args.peer] if args.peer else [],
    )
    peer_items = node.set(PEER_ITEMS)
    printed = [len(peer_items.value)]

    def merged(change: Change) -> None:
        if change.local or PEER_ITEMS not in change.names:
            return
        with _out:  # the count read and printed in order, never an older one after
            count = len(peer_items.value)
            if count > printed[0]:
                printed[0] = count
                sys.stdout.write(f"peer {count}\n")
                sys.stdout.flush()

    node.subscribe(merged)
    emit(f"ready {node.url}")

    rng = random.Random(args.seed)
    items, hits = node.set(ITEMS), node.counter(HITS)
    k = 0

    def write(kind: str) -> str:
        nonlocal k
        k += 1
        name = f"{args.round}.{k}"
        if kind == "add":
            items.add(name)
        else:
            hits.increment()
        return f"{kind} {name}"

    def kind() -> str:
        return "add" if rng.random() < 0.7 else "inc"

    while True:
        if rng.random() < 0.25:
            with node.batch():
                lines = [write(kind()) for _ in range(rng.randint(2, MAX_BATCH))]
            emit(*lines)  # the block has ended: its writes are durable
        else:
            line = write(kind())
            emit(line)
        if args.pace:
            time.sleep(args.pace)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # the test is gone
        os._exit(2)
