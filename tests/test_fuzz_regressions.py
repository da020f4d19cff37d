"""Every input the decode fuzz target ever failed on, replayed (``fuzz/decode_target.py``).

``make fuzz`` writes each crashing input to ``fuzz/crashers/decode/``; the
file stays there for good, and this test keeps the bug fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.decode_target import CRASHERS, SEED, one_input, run_python, seeds

KEPT = sorted(CRASHERS.glob("*"))


def test_crashers_are_kept() -> None:
    assert KEPT, f"{CRASHERS} holds the crashers found so far: it is never emptied"


@pytest.mark.parametrize("path", KEPT, ids=[path.name for path in KEPT])
def test_a_kept_crasher_no_longer_fails(path: Path) -> None:
    one_input(path.read_bytes())


def test_every_seed_passes_and_a_short_driver_run_finds_nothing() -> None:
    for data in seeds():
        one_input(data)
    assert run_python(0.3, SEED) == 0
