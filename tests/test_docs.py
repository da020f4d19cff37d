"""Every Python block in the README and docs runs, and the architecture page
names every module of the package, so neither can rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(code, id=f"{page.name}:{n}")
    for page in PAGES
    for n, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


@pytest.mark.parametrize("code", BLOCKS)
def test_python_block_runs(code: str) -> None:
    exec(compile(code, "<docs>", "exec"), {})


def test_architecture_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "agentsync").rglob("*.py")
        if path.name != "__init__.py" or path.parent.name != "agentsync"
    )
    missing = [module for module in modules if f"`{module}`" not in page]
    assert not missing, f"docs/architecture.md does not name: {missing}"
