"""The worker ``tests/workflow/test_board_nodes.py`` kills with SIGKILL, mid-task.

``python -m tests.workflow.worker_child PLANNER_URL AGENT LEASE COUNT`` (cwd
the repo root) runs a Node that gossips with the planner, claims ``COUNT``
tasks for ``AGENT`` on the board ``tasks``, prints ``claimed ID`` for each
(one flushed line), then renews its leases and never finishes them, as a
worker stuck in its work would, until it is killed. It exits by itself after
``MAX_SECONDS``, should the test die without killing it.
"""

from __future__ import annotations

import asyncio
import sys
import time

from agentsync import Node
from agentsync.workflow import TaskBoard

MAX_SECONDS = 60.0


async def main(planner: str, agent: str, lease: float, count: int) -> None:
    end = time.monotonic() + MAX_SECONDS
    async with Node(agent, peers=[planner], gossip_interval=0.05) as node:
        board = TaskBoard(node, lease=lease)
        held: list[str] = []
        while time.monotonic() < end:
            if len(held) < count and (task := board.claim(agent)) is not None:
                held.append(task.id)
                print(f"claimed {task.id}", flush=True)
            for task_id in held:
                board.heartbeat(task_id)
            await asyncio.sleep(lease / 10)


if __name__ == "__main__":
    url, agent_id, lease_s, how_many = sys.argv[1:]
    asyncio.run(main(url, agent_id, float(lease_s), int(how_many)))
