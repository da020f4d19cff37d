"""Every Python block in the README and the docs site runs, every other block
says what it is, and the architecture page names every module of the package,
so none of them can rot.

A block may pull a file in with a snippet line (``--8<-- "path"``, as
``mkdocs.yml``'s pymdownx.snippets does): a whole file of ``examples/`` is run
by ``tests/test_cli_and_examples.py`` and only checked to exist here; any other
snippet is expanded and run with its block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\n', re.M)
NOT_RUN = {"sh", "text"}
"""The fences of blocks that are not Python: shell commands, output, formats."""


def _blocks(language: str) -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}:{n}", code)
        for page in PAGES
        for n, (lang, code) in enumerate(FENCE.findall(page.read_text()))
        if lang == language
    ]


def _expand(code: str) -> str:
    def include(match: re.Match[str]) -> str:
        path = ROOT / match.group(1)
        assert path.is_file(), f"snippet {match.group(1)} does not exist"
        return "" if path.parent == ROOT / "examples" else path.read_text()

    return SNIPPET.sub(include, code)


@pytest.mark.parametrize("code", [pytest.param(c, id=i) for i, c in _blocks("python")])
def test_python_block_runs(code: str) -> None:
    exec(compile(_expand(code), "<docs>", "exec"), {})


def test_every_block_says_what_it_is() -> None:
    unmarked = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in PAGES
        for n, (lang, _) in enumerate(FENCE.findall(page.read_text()))
        if lang != "python" and lang not in NOT_RUN
    ]
    assert not unmarked, f"blocks that are neither python nor one of {sorted(NOT_RUN)}: {unmarked}"


def test_architecture_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "agentsync").rglob("*.py")
        if path.name != "__init__.py" or path.parent.name != "agentsync"
    )
    missing = [module for module in modules if f"`{module}`" not in page]
    assert not missing, f"docs/architecture.md does not name: {missing}"
