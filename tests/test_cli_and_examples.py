"""The command line, the demo and every example run as a user would run them.

The networked commands (``serve``, ``status``, ``dump``) and every error path
are tested in ``tests/cli/``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentsync.cli import main
from agentsync.demo import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DEMO_DEADLINE_S = 15.0


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def test_demo_converges_and_exits_zero_within_its_deadline() -> None:
    began = time.monotonic()
    result = _run("-m", "agentsync.cli", "demo", timeout=DEMO_DEADLINE_S)
    assert time.monotonic() - began < DEMO_DEADLINE_S
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("converged: True")
    assert "Traceback" not in result.stderr
    assert "\x1b[" not in result.stdout  # not a terminal: plain snapshots, no redraws


def test_demo_story_ends_on_the_board_the_types_promise() -> None:
    out = io.StringIO()
    assert run(out, live=False)
    text = out.getvalue()
    final = text[text.index("== 3. back: converged") :].splitlines()
    rows = {line[:12].strip(): line[12:].split() for line in final[2:7]}
    assert rows["tasks done"] == ["10", "10", "10", "yes"]  # 4 together + 6 apart
    assert rows["findings"] == ["api,bug,cpu,doc,faq,gc"] * 3 + ["yes"]  # the re-add won
    assert rows["needs review"] == ["yes", "yes", "yes", "yes"]  # the enable won
    assert rows["link"] == ["online"] * 3
    assert "OFFLINE" in text  # the researcher really was off the network
    assert "'gc' is back" in text


def test_demo_live_view_redraws_in_place() -> None:
    out = io.StringIO()
    assert run(out, live=True)
    text = out.getvalue()
    assert "\x1b[J" in text  # cursor moved up and the old board cleared
    assert text.rstrip().endswith("converged: True")


def test_main_returns_demo_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--plain"]) == 0
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
