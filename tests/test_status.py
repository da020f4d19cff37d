"""``agentsync.status``'s pure parts: bounded previews of any value, and lag in dots."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import GSet, LWWMap, ORMap, ORSet
from agentsync.status import ELLIPSIS, MAX_CHARS, SORTED_UP_TO, clip, lag, preview
from tests.crdt.strategies import examples, lattice_elements, worlds
from tests.crdt.strategies import values as plain_values

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner).map(tuple)
        | st.frozensets(st.text() | st.integers())
        | st.dictionaries(st.text(), inner).map(MappingProxyType)
    ),
    max_leaves=40,
)


@given(values, st.integers(min_value=2, max_value=300))
def test_a_preview_is_bounded_and_says_when_it_was_cut(value: Any, limit: int) -> None:
    text, whole = preview(value, limit), preview(value, 10**9)
    assert len(text) <= limit
    assert text == whole or (text.endswith(ELLIPSIS) and whole.startswith(text[:-1]))


def test_small_values_preview_as_json() -> None:
    assert preview(None) == "null"
    assert preview(3) == "3"
    assert preview('<b>"x"</b>') == '"<b>\\"x\\"</b>"'  # escaped as JSON; the page adds text only
    assert preview(frozenset({"b", "a", 2})) == '["a", "b", 2]'  # a small set, sorted by repr
    assert preview(MappingProxyType({"k": (1, b"\x00\x01")})) == '{"k": [1, <2 bytes>]}'
    assert preview({("t", 1): True}) == "{\"('t', 1)\": true}"


def test_a_huge_value_is_walked_only_as_far_as_it_is_shown() -> None:
    class Endless:
        """An iterable that would never end: the preview must stop on its own."""

        def __iter__(self) -> Any:
            n = 0
            while True:
                n += 1
                yield n

    text = preview(Endless())
    assert len(text) == MAX_CHARS and text.startswith("[1, 2, 3") and text.endswith(ELLIPSIS)
    assert len(preview("x" * 10_000_000)) == MAX_CHARS


LIMITS = st.sampled_from([2, 17, MAX_CHARS, 10**6])


@settings(max_examples=examples(150))
@given(worlds(snapshots=True, check_every_step=False), LIMITS)
def test_a_replica_previews_as_its_value_does(world: Any, limit: int) -> None:
    """Read in place, every type (maps nested in maps, deltas too) shows what its value shows."""
    for replica in lattice_elements(world, deltas=True):
        assert preview(replica, limit) == preview(replica.value, limit)


set_elements = (
    st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1) | st.tuples(st.text(max_size=3))
)


@given(
    st.lists(set_elements, min_size=1, max_size=SORTED_UP_TO, unique=True)
    | st.lists(set_elements, min_size=SORTED_UP_TO + 1, max_size=SORTED_UP_TO + 8, unique=True),
    st.dictionaries(st.text(max_size=4), plain_values(), max_size=8),
    LIMITS,
)
def test_sets_of_any_size_preview_in_maps_as_their_value(
    elements: list[Any], plain: dict[str, Any], limit: int
) -> None:
    """Sets on both sides of ``SORTED_UP_TO``, nested: sorted up to it, else in the order added."""
    top = ORMap("a")
    for element in elements:
        top.update("s", ORSet, lambda s, e=element: s.add(e))
        top.update(("g", 1), ORMap, lambda m, e=element: m.update(0, GSet, lambda g: g.add(e)))
    for key, value in plain.items():
        top.update("w", LWWMap, lambda m, k=key, v=value: m.set(k, v))
    if len(elements) <= SORTED_UP_TO:
        assert preview(top, limit) == preview(top.value, limit)
    else:  # a frozenset's order is its own, the replica's the order of adds
        expected: dict[Any, Any] = {"s": tuple(elements), ("g", 1): {0: tuple(elements)}}
        if plain:
            expected["w"] = top["w"].value
        assert preview(top, limit) == preview(expected, limit)


def test_clip() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab" + ELLIPSIS


def test_lag_counts_dots_each_way() -> None:
    mine = {"me.1": 5, "x.2": 10, "gone.3": 2}
    assert lag(mine, "me.1", None) is None  # the peer reported no vector yet
    assert lag(mine, "me.1", dict(mine)) == {"own": 0, "all": 0, "ahead": 0}
    assert lag(mine, "me.1", {"me.1": 3, "x.2": 4, "new.4": 7}) == {
        "own": 2, "all": 2 + 6 + 2, "ahead": 7,
    }  # fmt: skip
    assert lag({}, "me.1", {"me.1": 1}) == {"own": 0, "all": 0, "ahead": 1}
