"""CausalContext (a version vector plus a dot cloud, kept compact) and Dot."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentsync.crdt import CausalContext, Dot, decode, encode
from agentsync.crdt.values import MAX_REPLICA_ID_CHARS
from agentsync.errors import IntegerRangeError
from tests.crdt.codec_strategies import INT64_MAX


def dots_of(ctx: CausalContext) -> set[tuple[str, int]]:
    return {(d.replica_id, d.counter) for d in ctx}


def assert_compact(ctx: CausalContext) -> None:
    """No cloud dot is covered by, or contiguous with, the version vector."""
    vv = ctx.version_vector
    for replica_id, n in ctx.cloud:
        assert n > vv.get(replica_id, 0) + 1


# -- Dot -------------------------------------------------------------------------------


def test_dot() -> None:
    dot = Dot("a", 3)
    assert dot.replica_id == "a"
    assert dot.counter == 3
    assert dot == ("a", 3)
    replica_id, counter = dot
    assert (replica_id, counter) == ("a", 3)
    assert Dot("a", 2) < Dot("a", 10) < Dot("b", 1)
    assert hash(dot) == hash(("a", 3))


# -- construction -----------------------------------------------------------------------


def test_empty() -> None:
    ctx = CausalContext()
    assert not ctx
    assert ctx.version_vector == {}
    assert ctx.cloud == frozenset()
    assert list(ctx) == []
    assert ctx == CausalContext({}, [])
    assert "CausalContext" in repr(ctx)


def test_constructor_compacts() -> None:
    ctx = CausalContext({"a": 2, "c": 1}, [("a", 3), ("a", 5), ("a", 1), ("b", 1), ("b", 3)])
    assert ctx.version_vector == {"a": 3, "b": 1, "c": 1}
    assert ctx.cloud == frozenset({Dot("a", 5), Dot("b", 3)})
    assert all(type(d) is Dot for d in ctx.cloud)
    assert ctx
    assert_compact(ctx)
    assert ctx == CausalContext({"a": 3, "b": 1, "c": 1}, [("b", 3), ("a", 5)])
    assert CausalContext(cloud=[("a", 2), ("a", 1), ("a", 3)]) == CausalContext({"a": 3})


@pytest.mark.parametrize(
    "version_vector, cloud, error",
    [
        ({1: 1}, [], TypeError),
        ({b"a": 1}, [], TypeError),
        ({"": 1}, [], ValueError),
        ({"x" * (MAX_REPLICA_ID_CHARS + 1): 1}, [], ValueError),
        ({"a": 0}, [], ValueError),
        ({"a": -1}, [], ValueError),
        ({"a": INT64_MAX + 1}, [], IntegerRangeError),
        ({"a": 1.0}, [], TypeError),
        ({"a": True}, [], TypeError),
        ({"a": "1"}, [], TypeError),
        ({}, [(None, 1)], TypeError),
        ({}, [("", 1)], ValueError),
        ({}, [("a", 0)], ValueError),
        ({}, [("a", INT64_MAX + 1)], IntegerRangeError),
        ({}, [("a", 1.5)], TypeError),
        ({}, [("a", False)], TypeError),
        ({}, [("a", 1, 2)], ValueError),
        ({}, [("a",)], ValueError),
        ({}, [5], TypeError),
    ],
    ids=repr,
)
def test_constructor_validates(
    version_vector: dict[Any, Any], cloud: list[Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        CausalContext(version_vector, cloud)


def test_constructor_accepts_the_extremes() -> None:
    ctx = CausalContext({"x" * MAX_REPLICA_ID_CHARS: INT64_MAX}, [("b", INT64_MAX)])
    assert ctx.has("x" * MAX_REPLICA_ID_CHARS, INT64_MAX)
    assert ("b", INT64_MAX) in ctx


# -- reads --------------------------------------------------------------------------------


def test_membership() -> None:
    ctx = CausalContext({"a": 2}, [("b", 4)])
    assert Dot("a", 1) in ctx
    assert ("a", 2) in ctx
    assert ("a", 3) not in ctx
    assert ("b", 4) in ctx
    assert ("b", 3) not in ctx
    assert ("c", 1) not in ctx
    assert ctx.has("a", 2)
    assert not ctx.has("b", 1)
    for other in ["a", 1, None, ("a",), ("a", 1, 2), ["a", 1], {"a": 1}]:
        assert other not in ctx


def test_iteration_lists_every_dot_in_order() -> None:
    ctx = CausalContext({"b": 2, "a": 1}, [("a", 5), ("c", 9), ("a", 3)])
    dots = list(ctx)
    assert dots == [("a", 1), ("b", 1), ("b", 2), ("a", 3), ("a", 5), ("c", 9)]
    assert all(type(d) is Dot for d in dots)


def test_properties_are_copies() -> None:
    ctx = CausalContext({"a": 1}, [("a", 3)])
    ctx.version_vector["a"] = 99
    assert ctx.version_vector == {"a": 1}
    assert ctx.cloud == frozenset({("a", 3)})


def test_max_counter() -> None:
    ctx = CausalContext({"a": 2, "b": 4}, [("a", 7), ("a", 5), ("c", 3)])
    assert ctx.max_counter("a") == 7
    assert ctx.max_counter("b") == 4
    assert ctx.max_counter("c") == 3
    assert ctx.max_counter("d") == 0


def test_equality() -> None:
    assert CausalContext({"a": 1}) == CausalContext(cloud=[("a", 1)])
    assert CausalContext({"a": 1}) != CausalContext({"a": 2})
    assert CausalContext({"a": 1}) != CausalContext({"b": 1})
    assert CausalContext({}, [("a", 3)]) != CausalContext({}, [("a", 4)])
    assert CausalContext() != {}
    assert CausalContext() != 0
    with pytest.raises(TypeError):
        hash(CausalContext())


def test_copy_is_independent() -> None:
    ctx = CausalContext({"a": 1}, [("b", 3)])
    twin = ctx.copy()
    assert twin == ctx
    twin.add(("c", 1))
    twin.add(("b", 1))
    assert ctx == CausalContext({"a": 1}, [("b", 3)])


# -- add, merge, next_dot ------------------------------------------------------------------


def test_add_folds_the_cloud_into_the_vector() -> None:
    ctx = CausalContext()
    for dot in [("a", 3), ("a", 4), ("a", 6)]:
        ctx.add(dot)
    assert ctx.version_vector == {}
    ctx.add(("a", 1))
    assert ctx.version_vector == {"a": 1}
    ctx.add(("a", 2))
    assert ctx.version_vector == {"a": 4}
    assert ctx.cloud == frozenset({("a", 6)})
    ctx.add(("a", 3))  # seen: nothing changes
    ctx.add(("a", 6))
    assert ctx == CausalContext({"a": 4}, [("a", 6)])


def test_merge_is_a_compact_union() -> None:
    left = CausalContext({"a": 2, "b": 1}, [("a", 5), ("c", 2)])
    right = CausalContext({"a": 3, "c": 1}, [("a", 7), ("b", 3)])
    expected = dots_of(left) | dots_of(right)
    merged = left.copy()
    merged.merge(right)
    assert dots_of(merged) == expected
    assert merged.version_vector == {"a": 3, "b": 1, "c": 2}
    assert merged.cloud == frozenset({("a", 5), ("a", 7), ("b", 3)})
    assert_compact(merged)
    other = right.copy()
    other.merge(left)
    assert other == merged
    merged.merge(merged)
    assert dots_of(merged) == expected
    assert right == CausalContext({"a": 3, "c": 1}, [("a", 7), ("b", 3)])  # untouched


def test_merge_folds_the_cloud_the_vector_reaches() -> None:
    ctx = CausalContext({}, [("a", 3), ("a", 4), ("a", 9), ("b", 2)])
    ctx.merge(CausalContext({"a": 2}))
    assert ctx == CausalContext({"a": 4}, [("a", 9), ("b", 2)])
    ctx.merge(CausalContext({"a": 9, "b": 1}))
    assert ctx == CausalContext({"a": 9, "b": 2})


def test_next_dot_issues_and_records() -> None:
    ctx = CausalContext({"b": 4})
    assert ctx.next_dot("a") == ("a", 1)
    assert ctx.next_dot("a") == ("a", 2)
    assert ctx.next_dot("b") == ("b", 5)
    assert ctx == CausalContext({"a": 2, "b": 5})


def test_next_dot_never_issues_a_seen_dot() -> None:
    ctx = CausalContext({"a": 1}, [("a", 3)])
    issued = [ctx.next_dot("a"), ctx.next_dot("a")]
    assert issued[0] == ("a", 2)
    assert issued[1] not in CausalContext({"a": 1}, [("a", 3)])
    assert_compact(ctx)


# -- a model: the context is exactly the set of dots it was given --------------------------

small_dots = st.tuples(st.sampled_from("abc"), st.integers(1, 12))


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), small_dots),
            st.tuples(
                st.just("merge"),
                st.tuples(
                    st.dictionaries(st.sampled_from("abc"), st.integers(1, 8), max_size=3),
                    st.lists(small_dots, max_size=6),
                ),
            ),
        ),
        max_size=25,
    )
)
def test_context_matches_a_set_of_dots(ops: list[tuple[str, Any]]) -> None:
    ctx = CausalContext()
    model: set[tuple[str, int]] = set()
    for op, arg in ops:
        if op == "add":
            ctx.add(arg)
            model.add(arg)
        else:
            version_vector, cloud = arg
            other = CausalContext(version_vector, cloud)
            assert dots_of(other) == {
                (r, n) for r, top in version_vector.items() for n in range(1, top + 1)
            } | set(cloud)
            ctx.merge(other)
            model |= dots_of(other)
        assert dots_of(ctx) == model
        assert_compact(ctx)
        assert ctx == CausalContext(cloud=model)  # compact, hence canonical
        for replica_id in "abc":
            assert ctx.max_counter(replica_id) == max(
                (n for r, n in model if r == replica_id), default=0
            )


def test_a_replica_never_reissues_a_seen_dot() -> None:
    # replica "a" restored from a peer that saw its dots 1 and 3, not 2
    state = [1, "os", 0, ["a"], [[0, 1], [0, 3, 1]], [["x", "y"], [], [0, 2], [1, 2]]]
    replica = decode(msgpack.packb(state))
    seen = replica.context
    for element in ("z", "w"):
        delta = replica.add(element)
        assert not any(dot in seen for dot in delta.context)  # a new element: one new dot
    decode(encode(replica))
