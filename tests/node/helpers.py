"""Shared helpers of the Node tests: run a coroutine, poll with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from agentsync import Node

T = TypeVar("T")

DEADLINE_S = 20.0
"""How long a test waits for nodes to converge before it fails."""


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(
    check: Callable[[], bool], what: str, deadline: float = DEADLINE_S, step: float = 0.02
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline} s waiting for: {what}")
        await asyncio.sleep(step)


def same_values(nodes: Iterable[Node]) -> bool:
    values = [node.value for node in nodes]
    return all(value == values[0] for value in values)


async def converge(nodes: list[Node], what: str = "every node equal") -> None:
    await eventually(lambda: same_values(nodes), what)


async def started(*nodes: Node) -> list[Node]:
    for node in nodes:
        await node.start()
    return list(nodes)


async def stop_all(nodes: Iterable[Node | None]) -> None:
    await asyncio.gather(*(node.stop() for node in nodes if node is not None))


async def with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
    return await asyncio.wait_for(awaitable, seconds)
