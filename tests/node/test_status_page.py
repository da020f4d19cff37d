"""The status page and its data over HTTP: served to anyone, data behind the token, bounded.

The browser's side is in ``test_status_browser.py``; here, the bytes and
headers, the 401s of a sealed cluster, the bounds on names and values, and
the lag a peer's reported version vector gives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from agentsync import Node
from agentsync.crdt import LWWMap, ORMap
from agentsync.crdt.setbase import SetBase
from agentsync.status import ELLIPSIS, MAX_CHARS, MAX_NAMES
from tests.node.helpers import run, started, stop_all

SECRET = b"p" * 32


async def fetch(url: str, token: str | None = None) -> tuple[int, Any, Any]:
    """Status, headers and body (JSON when it is JSON) of a GET."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as reply:
        json = reply.content_type == "application/json"
        return reply.status, reply.headers, await (reply.json() if json else reply.text())


def test_the_page_is_served_to_anyone_and_the_data_only_with_the_token() -> None:
    async def scenario() -> None:
        [node] = await started(Node("locked", secret=SECRET))
        assert node.keyring is not None
        token = node.keyring.primary.token
        try:
            status, headers, page = await fetch(node.url + "/")  # no token: the shell
            assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
            csp = headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            assert re.search(r"script-src 'sha256-[A-Za-z0-9+/]+=*';", csp)
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert not re.search(r"(src|href)=\"(?!data:)", page), "the page loads nothing else"
            assert "locked" not in page and token not in page  # a shell: no data in it

            for sent in (None, "wrong", token.upper()):
                status, headers, _ = await fetch(node.url + "/v1/status", sent)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert node.auth_failures == 3

            status, headers, body = await fetch(node.url + "/v1/status", token)
            assert status == 200 and headers["Cache-Control"] == "no-store"
            assert body["node_id"] == "locked" and body["peers"] == []
        finally:
            await stop_all([node])

    run(scenario())


def test_names_and_values_are_bounded_and_sorted() -> None:
    async def scenario() -> None:
        [node] = await started(Node("many"))
        try:
            for i in range(MAX_NAMES + 20):
                node.counter(f"c{i:03}").increment(i + 1)
            long_name = "a" * 256  # the longest a name may be, and first in order
            node.register(long_name).set("v" * 100_000)
            node.set("big").add("x")
            _, _, body = await fetch(node.url + "/v1/status")
        finally:
            await stop_all([node])
        names = body["names"]
        assert body["names_total"] == MAX_NAMES + 22 and len(names) == MAX_NAMES
        assert [n["name"] for n in names] == sorted(n["name"] for n in names)
        cut = names[0]
        assert names[1] == {"name": "big", "type": "ORSet", "size": 1, "value": '["x"]'}
        assert names[2] == {"name": "c000", "type": "PNCounter", "size": None, "value": "1"}
        assert cut["name"] == "a" * (MAX_CHARS - 1) + ELLIPSIS
        assert len(cut["value"]) == MAX_CHARS and cut["value"].endswith(ELLIPSIS)

    run(scenario())


def test_big_values_are_previewed_in_place_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's poll walks a set and an LWWMap of 100k and an ORMap of 20k, each in a map,
    only as far as it shows them: no whole value is built, no big set or map listed."""

    def copied(replica: Any) -> Any:
        raise AssertionError(f"a {type(replica).__name__}'s whole value was built")

    def small_only(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def guarded(replica: Any) -> Any:
            assert len(replica) < 1000, f"a {type(replica).__name__} of {len(replica)} was listed"
            return read(replica)

        return guarded

    async def scenario() -> None:
        [node] = await started(Node("big"))
        try:
            with node.batch():
                elements, plain = node.map("a").set("s"), node.map("b").lwwmap("w")
                for i in range(100_000):
                    elements.add(i)
                    plain[f"k{i}"] = i
                nested = node.map("c").map("m")
                for i in range(20_000):
                    nested.counter(i).increment()
            for kind in (SetBase, ORMap, LWWMap):
                monkeypatch.setattr(kind, "value", property(copied))
            monkeypatch.setattr(SetBase, "__iter__", small_only(SetBase.__iter__))
            for kind in (ORMap, LWWMap):
                monkeypatch.setattr(kind, "items", small_only(kind.items))
            _, _, body = await fetch(node.url + "/v1/status")
        finally:
            monkeypatch.undo()
            await stop_all([node])
        starts = ['{"s": [0, 1, 2, ', '{"w": {"k0": 0, "k1": 1, ', '{"m": {"0": 1, "1": 1, ']
        for shown, start in zip(body["names"], starts, strict=True):
            assert shown["type"] == "ORMap" and shown["size"] == 1
            assert len(shown["value"]) == MAX_CHARS and shown["value"].endswith(ELLIPSIS)
            assert shown["value"].startswith(start)

    run(scenario())


def test_a_peers_lag_is_counted_from_its_reported_vector() -> None:
    async def scenario() -> None:
        a, b = await started(Node("a", gossip_interval=60), Node("b", gossip_interval=60))
        a.add_peer(b.url)
        try:
            a.counter("hits").increment()
            b.counter("hits").increment()

            async def lag() -> Any:
                await a.sync_now()
                [peer] = a.status_json()["peers"]
                return peer["lag"]

            for _ in range(5):  # the vectors go with the exchanges once each has news
                if await lag() == {"own": 0, "all": 0, "ahead": 0}:
                    break
            else:
                raise AssertionError(f"b's vector never caught up: {await lag()}")
            await b.stop()  # b hears nothing more: its last vector stands
            a.counter("hits").increment(2)
            a.set("s").add("x")
            [peer] = a.status_json()["peers"]
            assert peer["node_id"] == "b" and peer["lag"] == {"own": 2, "all": 2, "ahead": 0}
            assert a.status_json()["dots"] == {"own": 3, "all": 4}
        finally:
            await stop_all([a, b])

    run(scenario())
