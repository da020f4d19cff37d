"""Adapter tests need their optional package: outside CI a missing one skips the
module with a printed reason; in CI (``CI`` set) it fails, so the tests always run there."""

from __future__ import annotations

import importlib
import os

import pytest


def require(module: str, extra: str) -> None:
    """Import ``module`` or skip the calling test module (fail under CI)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed (pip install 'agentsync[{extra}]'): {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the {extra} adapter tests must run: {reason}")
        print(f"skipping the {extra} adapter tests: {reason}")
        pytest.skip(reason, allow_module_level=True)
