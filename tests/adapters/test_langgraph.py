"""AgentsyncStore against LangGraph's own interface and its reference InMemoryStore.

The same scenarios run on both stores and must give the same results (the
order of search results aside: ours is newest first); then what only ours
does (created_at kept, refusals, a real compiled graph), and two Nodes on
loopback that see each other's puts and deletes (polled with a deadline).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from datetime import timezone
from typing import Any, TypedDict

import pytest

from tests.adapters.extras import require

require("langgraph", "langgraph")

from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.store.base import (  # noqa: E402
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore  # noqa: E402

from agentsync import Node  # noqa: E402
from agentsync.adapters.langgraph import AgentsyncStore  # noqa: E402
from tests.node.helpers import eventually, run, started, stop_all  # noqa: E402


def plain(item: Item | None) -> Any:
    """An item without its times (which differ between any two stores)."""
    return None if item is None else (item.namespace, item.key, item.value)


def found(items: list[Any]) -> list[Any]:
    """Search results as a sorted list, since the two stores order them differently."""
    return sorted((plain(item) for item in items), key=repr)


def fill(store: BaseStore) -> None:
    store.put(("users", "alice"), "prefs", {"theme": "dark", "size": 3, "tags": ["a", "b"]})
    store.put(("users", "alice"), "facts", {"city": "Oslo", "pets": {"cats": 2}})
    store.put(("users", "bob"), "prefs", {"theme": "light", "size": 7, "tags": ["a"]})
    store.put(("docs", "v1", "en"), "intro", {"text": "hello", "size": 5})
    store.put(("docs", "v2", "en"), "intro", {"text": "hi", "size": 1})


def scenario_crud(store: BaseStore) -> list[Any]:
    fill(store)
    out = [plain(store.get(("users", "alice"), "prefs")), plain(store.get(("users",), "prefs"))]
    store.put(("users", "alice"), "prefs", {"theme": "blue"})
    out.append(plain(store.get(("users", "alice"), "prefs")))
    store.delete(("users", "alice"), "prefs")
    store.delete(("users", "alice"), "never-there")
    out.append(plain(store.get(("users", "alice"), "prefs")))
    out.append(found(store.search(("users",))))
    return out


def scenario_search(store: BaseStore) -> list[Any]:
    fill(store)
    pages = [store.search((), limit=2, offset=n) for n in (0, 2, 4, 6)]
    return [
        found(store.search(("users",))),
        found(store.search(("users", "alice"))),
        found(store.search(("docs", "v1"))),
        found(store.search(("nothing",))),
        found(store.search(())),
        [len(page) for page in pages],
        found([item for page in pages for item in page]),
        len(store.search((), limit=1)),
    ]


def scenario_filter(store: BaseStore) -> list[Any]:
    fill(store)
    filters: list[dict[str, Any]] = [
        {"theme": "dark"},
        {"pets": {"cats": 2}},
        {"tags": ["a"]},
        {"size": {"$gt": 3}},
        {"size": {"$gte": 3, "$lt": 7}},
        {"size": {"$lte": 1}},
        {"theme": {"$ne": "dark"}},
        {"theme": {"$eq": "light"}},
        {"theme": "light", "size": 7},
        {"theme": "none"},
    ]
    prefixes = [("users",), ("users",), ("users",), ("docs",), ("docs",), ("docs",)]
    prefixes += [("users",)] * 4
    return [found(store.search(p, filter=f)) for p, f in zip(prefixes, filters, strict=True)]


def scenario_namespaces(store: BaseStore) -> list[Any]:
    fill(store)
    return [
        store.list_namespaces(),
        store.list_namespaces(prefix=("users",)),
        store.list_namespaces(prefix=("docs", "*", "en")),
        store.list_namespaces(suffix=("en",)),
        store.list_namespaces(suffix=("*", "alice")),
        store.list_namespaces(max_depth=1),
        store.list_namespaces(prefix=("docs",), max_depth=2),
        store.list_namespaces(limit=2, offset=1),
    ]


def scenario_batch(store: BaseStore) -> list[Any]:
    store.put(("a",), "old", {"n": 0})
    results = store.batch(
        [
            PutOp(("a",), "new", {"n": 1}),
            GetOp(("a",), "new"),  # reads see the state before the batch's puts
            PutOp(("a",), "new", {"n": 2}),  # the last put of an item wins
            PutOp(("a",), "old", None),
            SearchOp(("a",)),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("a",)),)),
        ]
    )
    return [
        results[0],
        plain(results[1]),  # type: ignore[arg-type]
        found(results[4]),  # type: ignore[arg-type]
        results[5],
        plain(store.get(("a",), "new")),
        plain(store.get(("a",), "old")),
    ]


def scenario_async(store: BaseStore) -> list[Any]:
    async def go() -> list[Any]:
        await store.aput(("x", "y"), "k", {"v": 1})
        await store.aput(("x", "z"), "k", {"v": 2})
        got = plain(await store.aget(("x", "y"), "k"))
        searched = found(await store.asearch(("x",), filter={"v": 2}))
        names = await store.alist_namespaces(prefix=("x",))
        await store.adelete(("x", "y"), "k")
        batched = await store.abatch([GetOp(("x", "y"), "k"), GetOp(("x", "z"), "k")])
        return [got, searched, names, [plain(item) for item in batched]]  # type: ignore[arg-type]

    return asyncio.run(go())


SCENARIOS = [scenario_crud, scenario_search, scenario_filter, scenario_namespaces]
SCENARIOS += [scenario_batch, scenario_async]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_same_results_as_langgraphs_in_memory_store(
    scenario: Callable[[BaseStore], list[Any]],
) -> None:
    ours = scenario(AgentsyncStore(Node("a")))
    assert ours == scenario(InMemoryStore())
    assert ours  # a scenario that returned nothing would compare nothing


def test_bytes_come_back_as_bytes_as_from_in_memory_store() -> None:
    """Thawing a stored value makes dicts and lists again but leaves bytes as bytes,
    at the top level of the value and nested in a dict or a list."""
    value = {"raw": b"\x00\xff", "nested": {"blob": b"abc"}, "list": [b"x", {"deep": b""}]}
    ours, theirs = AgentsyncStore(Node("a")), InMemoryStore()
    for store in (ours, theirs):
        store.put(("n",), "k", value)
    got = ours.get(("n",), "k")
    assert got is not None
    (hit,) = ours.search(("n",))
    for back in (got.value, hit.value):
        assert back == value
        for part in (back["raw"], back["nested"]["blob"], back["list"][0], back["list"][1]["deep"]):
            assert type(part) is bytes
    assert plain(got) == plain(theirs.get(("n",), "k"))


def test_items_carry_times_and_created_at_survives_an_update() -> None:
    store = AgentsyncStore(Node("a"))
    store.put(("n",), "k", {"v": 1})
    first = store.get(("n",), "k")
    assert first is not None and first.created_at == first.updated_at
    assert first.created_at.tzinfo is timezone.utc
    store.put(("n",), "k", {"v": 2})
    second = store.get(("n",), "k")
    assert second is not None and second.value == {"v": 2}
    assert second.created_at == first.created_at < second.updated_at
    (hit,) = store.search(("n",))
    assert hit.score is None and hit.updated_at == second.updated_at


def test_search_is_newest_first() -> None:
    store = AgentsyncStore(Node("a"))
    for key in ("b", "a", "c"):
        store.put(("n",), key, {"k": key})
    store.put(("n",), "b", {"k": "b2"})
    assert [item.key for item in store.search(("n",))] == ["b", "c", "a"]


def test_refusals_are_clear_and_write_nothing() -> None:
    node = Node("a")
    store = AgentsyncStore(node)
    with pytest.raises(NotImplementedError, match="TTL"):
        store.put(("n",), "k", {"v": 1}, ttl=5.0)
    with pytest.raises(NotImplementedError, match="vector index"):
        store.put(("n",), "k", {"v": 1}, index=["text"])
    with pytest.raises(InvalidNamespaceError):
        store.put(("a.b",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp((), "k", {"v": 1})])
    with pytest.raises(TypeError, match="must be a dict"):
        store.batch([PutOp(("n",), "k", ["not", "a", "dict"])])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unsupported value type set"):
        store.put(("n",), "k", {"v": {1, 2}})
    with pytest.raises(ValueError, match="unknown operation"):
        store.batch([object()])  # type: ignore[list-item]
    store.put(("n",), "k", {"v": 1})
    with pytest.raises(ValueError, match="unsupported filter operator"):
        store.batch([SearchOp(("n",), filter={"v": {"$in": [1]}}), PutOp(("n",), "j", {"v": 1})])
    # A bad op anywhere in a batch stops the whole batch before anything is written.
    with pytest.raises(TypeError):
        store.batch([PutOp(("n",), "ok", {"v": 1}), PutOp(("n",), "bad", {"v": {1}})])
    assert [item.key for item in store.search(())] == ["k"]
    store.put(("n",), "j", {"v": 1}, index=False, ttl=None)  # what it supports
    assert store.get(("n",), "j") is not None


def test_where_it_differs_from_in_memory_store() -> None:
    """An ordering filter skips items without the field (InMemoryStore raises), and a
    namespace is listed while it holds items (InMemoryStore keeps emptied ones)."""
    store = AgentsyncStore(Node("a"))
    store.put(("n",), "sized", {"size": 4})
    store.put(("n",), "unsized", {"text": "x"})
    store.put(("gone",), "k", {"v": 1})
    store.delete(("gone",), "k")
    assert [item.key for item in store.search(("n",), filter={"size": {"$gt": 3}})] == ["sized"]
    assert store.list_namespaces() == [("n",)]


def test_a_query_is_not_ranked_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store = AgentsyncStore(Node("a"))
    store.put(("n",), "k", {"text": "about cats"})
    with caplog.at_level(logging.WARNING, "agentsync.adapters.langgraph"):
        (hit,) = store.search(("n",), query="cats")
        store.search(("n",), query="dogs")
    assert hit.score is None
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "no vector index" in caplog.records[0].message


def test_entries_of_another_shape_under_the_name_are_skipped() -> None:
    node = Node("a")
    store = AgentsyncStore(node)
    store.put(("n",), "k", {"v": 1})
    node.lwwmap("langgraph")["stray"] = 1
    node.lwwmap("langgraph")[(("n",), "odd")] = {"value": 1}
    assert [item.key for item in store.search(())] == ["k"]
    assert store.get(("n",), "odd") is None
    assert store.list_namespaces() == [("n",)]


def test_a_compiled_graph_uses_it_as_its_store() -> None:
    class State(TypedDict):
        user: str
        seen: int

    def remember(state: State, *, store: BaseStore) -> dict[str, int]:
        namespace = ("memories", state["user"])
        store.put(namespace, str(len(store.search(namespace))), {"note": "hello"})
        return {"seen": len(store.search(namespace))}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    node = Node("a")
    graph = builder.compile(store=AgentsyncStore(node))
    assert graph.invoke({"user": "ada", "seen": 0})["seen"] == 1
    assert asyncio.run(graph.ainvoke({"user": "ada", "seen": 0}))["seen"] == 2
    assert node.lwwmap("langgraph").keys()


def test_two_nodes_share_puts_and_deletes() -> None:
    async def go() -> None:
        a, b = await started(Node("a"), Node("b"))
        try:
            a.add_peer(b.url)
            b.add_peer(a.url)
            sa, sb = AgentsyncStore(a), AgentsyncStore(b)
            await sa.aput(("team",), "plan", {"step": 1})
            await eventually(lambda: plain(sb.get(("team",), "plan")) is not None, "a's put at b")
            item = sb.get(("team",), "plan")
            assert item == sa.get(("team",), "plan")  # times too: they travel with the item
            await sb.adelete(("team",), "plan")
            await eventually(lambda: sa.get(("team",), "plan") is None, "b's delete at a")
            # Concurrent puts of one item: one wins, the same one on both nodes.
            sa.put(("team",), "lead", {"who": "a"})
            sb.put(("team",), "lead", {"who": "b"})
            await eventually(
                lambda: plain(sa.get(("team",), "lead")) == plain(sb.get(("team",), "lead")),
                "both nodes agree on one lead",
            )
            assert sa.search(("team",)) == sb.search(("team",))
        finally:
            await stop_all([a, b])

    run(go(), timeout=30)


def test_without_the_extra_the_import_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langgraph.store.base", None)  # import fails
    monkeypatch.delitem(sys.modules, "agentsync.adapters.langgraph")
    with pytest.raises(ImportError, match=r"pip install 'agentsync\[langgraph\]'"):
        importlib.import_module("agentsync.adapters.langgraph")
