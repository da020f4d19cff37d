"""An MCP server whose tools read and write a Node's names, so any MCP-capable agent joins the mesh.

``agentsync mcp`` runs a node (with the usual peers, seeds, secret and
data directory) and serves these tools over stdio, the transport MCP
clients launch servers with; ``build_server(node)`` gives the server for
another transport or a test. Every argument is checked (strict types, a
name of 1 to 256 characters, values a node can hold), and every refusal
(a bad argument, a name holding another type, a read-only node) comes back
as a tool error the model can read, never as a crash.

The tools: ``list_names``, ``read``, ``increment_counter``, ``set_add``,
``set_remove``, ``register_set``, ``map_set``, ``map_get``, ``map_delete``.
Reads are local; writes apply at once and reach the other nodes by gossip.
See ``docs/guides/mcp.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from agentsync.errors import AgentsyncError
from agentsync.node import MAX_NAME_CHARS, Node, to_json

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from pydantic import Field  # the SDK's own dependency: its tools' schemas
except ImportError as exc:  # pragma: no cover  # the dev extra installs it
    raise ImportError(
        "agentsync.adapters.mcp needs the MCP SDK: pip install 'agentsync[mcp]'"
    ) from exc

INSTRUCTIONS = """\
These tools read and write state shared with other agents through agentsync,
with no server: each write applies here at once and reaches the other agents
within about a second; reads show what has arrived so far. Each top-level
name holds one type: counters add up concurrent increments, sets keep an
element added concurrently with its removal, registers and map keys keep the
last write. Call list_names first to see what exists."""

Name = Annotated[
    str,
    Field(
        strict=True,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="a top-level name of the shared state",
    ),
]
Key = Annotated[str, Field(strict=True, min_length=1, description="a key of the map")]
Amount = Annotated[
    int,
    Field(strict=True, description="how much to add; negative subtracts (signed 64 bits)"),
]
JsonValue = Annotated[Any, Field(description="any JSON value")]


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn a refused argument or write into a ToolError the model reads."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AgentsyncError, PermissionError) as exc:
        text = str(exc) if not isinstance(exc, KeyError) else f"no such element: {exc}"
        raise ToolError(text or type(exc).__name__) from exc


_ABSENT: Any = object()
"""What ``map_get`` reads for a key the map does not hold."""


def build_server(node: Node, name: str = "agentsync") -> MCPServer:
    """An MCP server whose tools read and write ``node``'s names (any transport)."""
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS)

    @server.tool()
    def list_names() -> dict[str, str]:
        """Every top-level name and its type (PNCounter, ORSet, LWWRegister, LWWMap, ORMap...)."""
        return node.names()

    @server.tool()
    def read(name: Name) -> dict[str, Any]:
        """The type and value of a name, as JSON (sets as sorted lists); null type if absent."""
        with _refusals():
            kind, value = node.describe(name) or (None, None)
            return {"name": name, "type": kind, "value": to_json(value)}

    @server.tool()
    def increment_counter(name: Name, by: Amount = 1) -> int:
        """Add ``by`` to the counter ``name`` (created at 0); returns its value here."""
        with _refusals():
            counter = node.counter(name)
            if by >= 0:
                counter.increment(by)
            else:
                counter.decrement(-by)
            return int(counter.value)

    @server.tool()
    def set_add(name: Name, element: JsonValue) -> list[Any]:
        """Add ``element`` to the set ``name`` (add-wins); returns the set here."""
        with _refusals():
            elements = node.set(name)
            elements.add(element)
            return list(to_json(elements.value))

    @server.tool()
    def set_remove(name: Name, element: JsonValue) -> list[Any]:
        """Remove ``element`` from the set ``name`` (an error if absent); returns the set here."""
        with _refusals():
            elements = node.set(name)
            elements.remove(element)
            return list(to_json(elements.value))

    @server.tool()
    def register_set(name: Name, value: JsonValue) -> dict[str, Any]:
        """Write ``value`` to the last-writer-wins register ``name``; returns it as held."""
        with _refusals():
            register = node.register(name)
            register.set(value)
            return {"value": to_json(register.value)}

    @server.tool()
    def map_set(name: Name, key: Key, value: JsonValue) -> dict[str, Any]:
        """Write ``value`` under ``key`` of the last-writer-wins map ``name``; returns it."""
        with _refusals():
            entries = node.lwwmap(name)
            entries[key] = value
            return {"value": to_json(entries[key])}

    @server.tool()
    def map_get(name: Name, key: Key) -> dict[str, Any]:
        """The value under ``key`` of the map ``name``: ``found`` says whether it is there."""
        with _refusals():
            value = node.lwwmap(name).get(key, _ABSENT)  # one read: a merge may land between two
            found = value is not _ABSENT
            return {"found": found, "value": to_json(value) if found else None}

    @server.tool()
    def map_delete(name: Name, key: Key) -> bool:
        """Delete ``key`` from the map ``name``; False if it was not there."""
        with _refusals():
            try:
                del node.lwwmap(name)[key]
            except KeyError:  # absent here, or removed by a merge just now
                return False
            return True

    return server


async def serve_stdio(node: Node) -> None:
    """Serve ``node``'s tools on stdin and stdout until the client closes stdin."""
    await build_server(node).run_stdio_async()


__all__ = ["INSTRUCTIONS", "build_server", "serve_stdio"]
