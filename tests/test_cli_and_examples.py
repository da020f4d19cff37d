"""The command line, the demo and every example run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentsync.cli import main
from agentsync.demo import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def test_demo_converges_and_exits_zero() -> None:
    result = _run("-m", "agentsync.cli", "demo")
    assert result.returncode == 0, result.stderr
    assert "converged: True" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_story_is_deterministic() -> None:
    first: list[str] = []
    second: list[str] = []
    assert run(first.append)
    assert run(second.append)
    assert first == second


def test_main_returns_demo_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert "converged: True" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["demo", "--bogus"]])
def test_bad_arguments_exit_2_without_traceback(argv: list[str]) -> None:
    result = _run("-m", "agentsync.cli", *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr


def test_version() -> None:
    result = _run("-m", "agentsync.cli", "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("agentsync ")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path) -> None:
    result = _run(str(example))
    assert result.returncode == 0, result.stderr
