"""The library logs through ``logging`` under ``agentsync.*`` and never prints.

An application owns its stdout and its log configuration: a library that
prints corrupts a program's output (an MCP server speaks JSON on stdout), and
one that configures logging overrides the application's. Only the command
line (``cli.py``, and ``watch.py`` for ``status --watch``) and the demo it
runs (``demo.py``) may print. The check
reads the source (AST), so a print on a path no test runs is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "agentsync"
MAY_PRINT = {"cli.py", "demo.py", "watch.py"}
ROOT_LOGGER_CALLS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
LIBRARY = sorted(
    path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).as_posix() not in MAY_PRINT
)


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of attributes on a name, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def violations(source: str) -> list[str]:
    """What in ``source`` breaks the policy, each as ``line: what``, in line order."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _dotted(node) in {"sys.stdout", "sys.stderr"}:
            found.append((node.lineno, _dotted(node)))
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name == "print":
            found.append((node.lineno, "print()"))
        elif name == "logging.basicConfig":
            found.append((node.lineno, name))
        elif name == "logging.getLogger" and not _agentsync_logger(node):
            found.append((node.lineno, "a logger outside agentsync.*"))
        elif name.removeprefix("logging.") in ROOT_LOGGER_CALLS and name.startswith("logging."):
            found.append((node.lineno, f"{name}, the root logger"))
    return [f"{line}: {what}" for line, what in sorted(found)]


def _agentsync_logger(call: ast.Call) -> bool:
    """``getLogger("agentsync.…")`` or ``getLogger(__name__)`` (a module of the package)."""
    if len(call.args) != 1 or call.keywords:
        return False
    [arg] = call.args
    if isinstance(arg, ast.Name):
        return arg.id == "__name__"
    return isinstance(arg, ast.Constant) and str(arg.value).startswith("agentsync.")


def test_the_check_sees_each_kind_of_violation() -> None:
    source = """
import logging, sys
print("hi")
sys.stderr.write("x")
logging.basicConfig()
logging.getLogger("other")
logging.getLogger()
logging.warning("to the root logger")
logging.getLogger("agentsync.ok").info("fine")
logging.getLogger(__name__).debug("fine")
"""
    assert [v.split(": ", 1)[1] for v in violations(source)] == [
        "print()",
        "sys.stderr",
        "logging.basicConfig",
        "a logger outside agentsync.*",
        "a logger outside agentsync.*",
        "logging.warning, the root logger",
    ]


def test_the_whole_library_is_scanned() -> None:
    names = {path.relative_to(PACKAGE).as_posix() for path in LIBRARY}
    assert {"node.py", "sync/engine.py", "transport/server.py"} <= names
    assert not names & MAY_PRINT


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_library_module_logs_and_never_prints(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []
