"""The Node's handles and whole-node reads, on one node that never starts."""

from __future__ import annotations

import pytest

from agentsync import Node
from agentsync.node import Change, to_json


def test_counter_set_register_flag() -> None:
    node = Node("a")
    hits = node.counter("hits")
    hits.increment()
    hits.increment(5)
    hits.decrement(2)
    assert hits.value == 4
    tags = node.set("tags")
    tags.add("x")
    tags.add("y")
    tags.remove("x")
    tags.discard("zzz")
    assert "y" in tags and "x" not in tags
    assert len(tags) == 1 and set(tags) == {"y"}
    with pytest.raises(KeyError):
        tags.remove("x")
    tags.clear()
    assert tags.value == frozenset()
    status = node.register("status")
    assert status.value is None
    status.set({"phase": "plan"})
    assert status.value == {"phase": "plan"}
    mv = node.mvregister("mv")
    assert mv.value == ()
    mv.set(1)
    assert mv.value == (1,)
    done = node.flag("done")
    assert done.value is False
    done.enable()
    assert done.value is True
    done.disable()
    assert done.value is False


def test_set_update_adds_many_in_one_write() -> None:
    node = Node("a")
    changes: list[Change] = []
    node.subscribe(changes.append)
    tags = node.set("tags")
    tags.update(["x", "y", "x"])
    tags.update(f"t{i}" for i in range(3))
    assert tags.value == frozenset({"x", "y", "t0", "t1", "t2"})
    assert len(changes) == 2  # one write each
    with pytest.raises(TypeError, match="use add"):
        tags.update("abc")  # not split into characters
    with pytest.raises(TypeError):
        tags.update(["z", ["unhashable", {}]])
    assert tags.value == frozenset({"x", "y", "t0", "t1", "t2"}) and len(changes) == 2


def test_lwwmap_reads_like_a_dict() -> None:
    node = Node("a")
    m = node.lwwmap("config")
    m["model"] = "small"
    m["temp"] = 0.5
    del m["temp"]
    assert m["model"] == "small"
    assert m.get("temp", "gone") == "gone"
    assert "model" in m and "temp" not in m
    assert len(m) == 1 and m.keys() == ["model"] and m.items() == [("model", "small")]
    assert m.value == {"model": "small"} and list(m) == ["model"]
    with pytest.raises(KeyError):
        del m["temp"]


def test_lwwmap_update_writes_many_in_one_write() -> None:
    node, peer = Node("a"), Node("b")
    changes: list[Change] = []
    node.subscribe(changes.append)
    m = node.lwwmap("config")
    m.update({"model": "small", "temp": 0.5}, temp=0.7, tags=["a"])  # keywords come last
    m.update([("model", "big"), ("seed", 1), ("model", "huge")])  # the last of a key wins
    assert m.value == {"model": "huge", "temp": 0.7, "tags": ("a",), "seed": 1}
    assert len(changes) == 2  # one write each
    context = node._engine.state.context
    m.update()  # no dot; subscribers still hear of it, as of a discard of an absent key
    assert node._engine.state.context == context and len(changes) == 3
    for bad in ({"ok": 1, "bad": object()}, [("ok", 1), "ab"], 5):
        with pytest.raises(TypeError):
            m.update(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        m.update({"ok": 1}, bad=object())
    assert m.value["model"] == "huge" and "ok" not in m and len(changes) == 3
    peer._engine.state.merge(node._engine.state)  # a peer merges the writes whole
    assert peer.lwwmap("config").value == m.value


def test_nested_maps() -> None:
    node = Node("a")
    agent = node.map("agents").map("planner")
    agent.counter("steps").increment(3)
    agent.set("tools").add("search")
    agent.register("model").set("m1")
    agent.lwwmap("notes")["k"] = "v"
    assert node.map("agents").value == {
        "planner": {
            "steps": 3,
            "tools": frozenset({"search"}),
            "model": "m1",
            "notes": {"k": "v"},
        }
    }
    assert "planner" in node.map("agents") and len(node.map("agents")) == 1
    agent.remove("steps")
    assert "steps" not in agent.value
    with pytest.raises(KeyError):
        agent.remove("steps")
    assert node.value["agents"]["planner"]["model"] == "m1"


def test_another_type_under_a_name_is_a_type_error() -> None:
    node = Node("a")
    node.counter("x").increment()
    with pytest.raises(TypeError, match="PNCounter"):
        node.set("x")
    node.map("m").counter("k").increment()
    with pytest.raises(TypeError):
        node.map("m").flag("k")
    with pytest.raises(TypeError):
        node.counter("m")


def test_names_and_value() -> None:
    node = Node("a")
    assert node.names() == {} and node.value == {}
    node.counter("c").increment()
    node.set("s").add(1)
    node.map("m").flag("f").enable()
    assert node.names() == {"c": "PNCounter", "s": "ORSet", "m": "ORMap"}
    assert node.value == {"c": 1, "s": frozenset({1}), "m": {"f": True}}


@pytest.mark.parametrize("bad", ["", "x" * 257, 5, None, ("t",)])
def test_bad_names_are_refused(bad: object) -> None:
    node = Node("a")
    with pytest.raises((TypeError, ValueError)):
        node.counter(bad)  # type: ignore[arg-type]


def test_bad_arguments_are_refused_before_anything_changes() -> None:
    node = Node("a")
    c = node.counter("c")
    with pytest.raises(TypeError):
        c.increment("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        c.increment(-1)
    r = node.register("r")
    with pytest.raises((TypeError, ValueError)):
        r.set(object())
    assert node.value == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"node_id": ""},
        {"node_id": 7},
        {"port": -1},
        {"port": 70000},
        {"gossip_interval": 0},
        {"gossip_interval": float("nan")},
        {"fanout": 0},
        {"peers": "http://127.0.0.1:1"},
        {"peers": ["ftp://x"]},
        {"peers": ["http://"]},
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        Node(**kwargs)  # type: ignore[arg-type]


def test_random_ids_differ_and_url_needs_start() -> None:
    assert Node().node_id != Node().node_id
    with pytest.raises(RuntimeError):
        _ = Node().url


def test_subscribers_see_local_changes_and_batches_notify_once() -> None:
    node = Node("a")
    seen: list[Change] = []
    unsubscribe = node.subscribe(seen.append)
    node.counter("c").increment()
    assert seen == [Change(frozenset({"c"}), local=True)]
    with node.batch():
        node.counter("c").increment()
        node.set("s").add(1)
        with node.batch():
            node.flag("f").enable()
        assert len(seen) == 1
    assert seen[-1] == Change(frozenset({"c", "s", "f"}), local=True)
    unsubscribe()
    unsubscribe()  # twice is harmless
    node.counter("c").increment()
    assert len(seen) == 2


def test_a_failing_subscriber_does_not_break_writes() -> None:
    node = Node("a")

    def broken(change: Change) -> None:
        raise RuntimeError("subscriber bug")

    node.subscribe(broken)
    node.counter("c").increment()
    assert node.counter("c").value == 1


def test_to_json() -> None:
    assert to_json({"s": frozenset({2, 1}), "t": (1, b"\x00"), 3: None}) == {
        "s": [1, 2],
        "t": [1, {"$bytes": "AA=="}],
        "3": None,
    }
