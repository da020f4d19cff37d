"""The status page in a real browser: headless Chromium (Debian's ``chromium``) under playwright.

One browser for the whole test, to keep it to a few seconds: the page on
one node shows another node's writes as they arrive, puts hostile names and
values in as text, and, on a node with a secret, asks for the token, refuses
a wrong one and shows the state with the right one. Every wait polls with a
deadline. The screenshots go to ``test-artifacts/`` at the repository root
(gitignored). Outside CI, a missing browser or playwright skips the test and
says why; with ``CI`` set, it fails (``.ci/run`` installs the browser).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agentsync import Node
from tests.node.helpers import eventually, run, started, stop_all

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 10_000
"""How long the page gets to show a change (it polls once a second)."""
NO_DATA = "\u2013"
"""What the page shows where it has no number yet (a rate before its second poll)."""
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"


def require_browser() -> Any:
    """playwright's async API, or skip (fail under CI) saying what is missing."""
    reason = None
    try:
        from playwright import async_api
    except ImportError as exc:
        reason = f"playwright is not installed (pip install -e '.[dev]'): {exc}"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"no {CHROMIUM} (apt-get install chromium; .ci/run does it)"
    if reason is None:
        return async_api
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the status page's browser test must run: {reason}")
    print(f"skipping the status page's browser test: {reason}")
    pytest.skip(reason)


def test_the_status_page_follows_another_nodes_writes_and_asks_for_the_token(
    tmp_path: Path,
) -> None:
    api = require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    run(_scenario(api, tmp_path), timeout=90)


async def _scenario(api: Any, tmp_path: Path) -> None:
    shown = await started(Node("page-node", gossip_interval=0.05))
    writer = await started(Node("writer", gossip_interval=0.05, peers=[shown[0].url]))
    sealed = await started(Node("sealed", secret=b"k" * 32))
    node, other, locked = shown[0], writer[0], sealed[0]
    other.register("greeting").set("hello 1")
    other.register(HOSTILE).set(HOSTILE)
    for tag in ("red", "green", "blue"):
        other.set("tags").add(tag)
    try:
        async with api.async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True
            )
            try:
                await _follows_writes(api, context, node, other)
                await _asks_for_the_token(api, context, locked)
            finally:
                await context.close()
    finally:
        await stop_all([node, other, locked])


async def _follows_writes(api: Any, context: Any, node: Node, other: Node) -> None:
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    await page.goto(node.url + "/")
    expect = api.expect
    await expect(page.locator("#node")).to_have_text("page-node", timeout=WAIT_MS)
    greeting = page.locator("#names tr", has_text="greeting").locator("td.value")
    await expect(greeting).to_have_text('"hello 1"', timeout=WAIT_MS)

    other.register("greeting").set("hello 2")  # on the other node: it reaches the page by gossip
    await expect(greeting).to_have_text('"hello 2"', timeout=WAIT_MS)

    hostile = page.locator("#names tr").filter(has_text="onerror")
    await expect(hostile.locator("td").first).to_have_text(HOSTILE, timeout=WAIT_MS)
    assert await page.locator("#names img, #names b").count() == 0, "state went in as HTML"
    assert await page.title() == "agentsync status"

    peer = page.locator("#peers tr", has_text="writer")
    await expect(peer.locator("td").nth(2)).to_have_text("alive", timeout=WAIT_MS)
    await expect(peer.locator("td").nth(5)).to_have_text("0", timeout=WAIT_MS)  # behind: no dots
    await expect(page.locator("#rounds-rate")).not_to_have_text(NO_DATA, timeout=WAIT_MS)
    await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
    assert not problems, f"the page logged errors (a CSP refusal?): {problems}"
    await page.close()


async def _asks_for_the_token(api: Any, context: Any, node: Node) -> None:
    assert node.keyring is not None
    node.counter("visits").increment(7)
    page = await context.new_page()
    await page.goto(node.url + "/")
    expect = api.expect
    await expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#status")).to_be_hidden()

    await page.fill("#token", "not-the-token")
    await page.click("#login button")
    await expect(page.locator("#refused")).to_be_visible(timeout=WAIT_MS)

    await page.fill("#token", node.keyring.primary.token)
    await page.click("#login button")
    visits = page.locator("#names tr", has_text="visits").locator("td.value")
    await expect(visits).to_have_text("7", timeout=WAIT_MS)
    assert node.keyring.primary.token not in page.url
    await page.screenshot(path=str(ARTIFACTS / "status-page-sealed.png"), full_page=True)

    await page.click("#forget")  # the tab forgets it: the page asks again
    await expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    await eventually(lambda: node.auth_failures >= 2, "the refused reads counted")
    await page.close()
