"""``agentsync.status``'s pure parts: bounded previews of any value, and lag in dots."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agentsync.status import ELLIPSIS, MAX_CHARS, clip, lag, preview

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner).map(tuple)
    | st.frozensets(st.text() | st.integers())
    | st.dictionaries(st.text(), inner).map(MappingProxyType),
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
