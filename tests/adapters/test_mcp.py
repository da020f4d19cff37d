"""The MCP server through the SDK's own client: in memory for every tool and refusal,
and ``agentsync mcp`` as a real subprocess on stdio whose writes reach another node."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.adapters.extras import require

require("mcp", "mcp")

from mcp import Client, StdioServerParameters  # noqa: E402

from agentsync import Node  # noqa: E402
from agentsync.adapters.mcp import build_server  # noqa: E402
from agentsync.cli import main  # noqa: E402
from tests.node.helpers import DEADLINE_S, eventually, run, started, stop_all  # noqa: E402

TOOLS = {
    "list_names", "read", "increment_counter", "set_add", "set_remove",
    "register_set", "map_set", "map_get", "map_delete",
}  # fmt: skip


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """A tool's structured result; AssertionError if it failed."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content.get("result", result.structured_content)


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """The text of a tool error; AssertionError if the call succeeded."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) was not refused"
    return " ".join(getattr(block, "text", "") for block in result.content)


def test_every_tool_in_memory() -> None:
    async def go() -> None:
        node = Node("a")
        async with Client(build_server(node)) as client:
            listed = await client.list_tools()
            assert {tool.name for tool in listed.tools} == TOOLS
            assert all(tool.description for tool in listed.tools)
            assert await call(client, "increment_counter", name="hits", by=5) == 5
            assert await call(client, "increment_counter", name="hits", by=-2) == 3
            assert await call(client, "increment_counter", name="hits") == 4
            assert await call(client, "set_add", name="tags", element="b") == ["b"]
            assert await call(client, "set_add", name="tags", element=[1, 2]) == ["b", [1, 2]]
            assert await call(client, "set_remove", name="tags", element="b") == [[1, 2]]
            held = await call(client, "register_set", name="goal", value={"x": [1]})
            assert held == {"value": {"x": [1]}}
            assert await call(client, "map_set", name="notes", key="k", value="v") == {"value": "v"}
            assert await call(client, "map_get", name="notes", key="k") == {
                "found": True,
                "value": "v",
            }
            assert await call(client, "map_delete", name="notes", key="k") is True
            assert await call(client, "map_delete", name="notes", key="k") is False
            assert await call(client, "map_get", name="notes", key="k") == {
                "found": False,
                "value": None,
            }
            assert await call(client, "list_names") == {
                "hits": "PNCounter", "tags": "ORSet", "goal": "LWWRegister", "notes": "LWWMap",
            }  # fmt: skip
            assert await call(client, "read", name="goal") == {
                "name": "goal", "type": "LWWRegister", "value": {"x": [1]},
            }  # fmt: skip
            assert await call(client, "read", name="none") == {
                "name": "none", "type": None, "value": None,
            }  # fmt: skip
        assert node.value["hits"] == 4 and node.value["tags"] == {(1, 2)}

    run(go(), timeout=30)


def test_bad_arguments_are_tool_errors_and_change_nothing() -> None:
    async def go() -> None:
        node = Node("a")
        node.counter("hits").increment()
        async with Client(build_server(node)) as client:
            assert "valid integer" in await refused(client, "increment_counter", name="n", by="3")
            assert "valid integer" in await refused(client, "increment_counter", name="n", by=1.5)
            assert "string" in await refused(client, "read", name=7)
            assert "at least 1" in await refused(client, "read", name="")
            assert "at most 256" in await refused(client, "set_add", name="x" * 257, element=1)
            assert "name" in await refused(client, "map_set", key="k", value=1)  # missing
            assert "holds a PNCounter" in await refused(client, "set_add", name="hits", element=1)
            assert "hashable" in await refused(client, "set_add", name="s", element={"a": 1})
            assert "no such element" in await refused(client, "set_remove", name="s", element=1)
            assert "64 bits" in await refused(client, "increment_counter", name="n", by=2**63)
            assert "64 bits" in await refused(client, "map_set", name="m", key="k", value=2**64)
        assert node.value == {"hits": 1}

        observer = Node("o", read_only=True)
        async with Client(build_server(observer)) as client:
            assert "read-only" in await refused(client, "increment_counter", name="n")

    run(go(), timeout=30)


def test_agentsync_mcp_on_stdio_joins_the_mesh() -> None:
    """A real ``agentsync mcp`` process, launched as MCP clients launch servers:
    its tool writes reach a node in this process, and that node's writes reach it."""

    async def go() -> None:
        (here,) = await started(Node("here"))
        try:
            server = StdioServerParameters(
                command=sys.executable,
                args=["-m", "agentsync.cli", "mcp", "--id", "tools", "--peer", here.url],
            )
            async with Client(server) as client:
                assert await call(client, "increment_counter", name="done", by=2) == 2
                await call(client, "map_set", name="notes", key="from", value="mcp")
                await eventually(
                    lambda: (
                        here.value.get("notes") == {"from": "mcp"}
                        and here.counter("done").value == 2
                    ),
                    "the tool's writes at the other node",
                )
                here.set("tasks").add("review")

                end = time.monotonic() + DEADLINE_S  # poll the tool with a deadline
                while (await call(client, "read", name="tasks"))["value"] != ["review"]:
                    assert time.monotonic() < end, "the other node's write never reached it"
                    await asyncio.sleep(0.02)
        finally:
            await stop_all([here])

    run(go(), timeout=60)


def test_agentsync_mcp_stops_its_node_on_sigterm_while_the_client_holds_stdin() -> None:
    """The SDK's stdin reader cannot be cancelled: the command must still stop
    its node and exit at once, not wait for a line that never comes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agentsync.cli", "mcp", "--id", "tools"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith("agentsync node tools serving http://")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_S) == 0
        assert "agentsync node tools stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_agentsync_mcp_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)  # import fails
    monkeypatch.delitem(sys.modules, "agentsync.adapters.mcp")
    assert main(["mcp"]) == 2
    assert "pip install 'agentsync[mcp]'" in capsys.readouterr().err
