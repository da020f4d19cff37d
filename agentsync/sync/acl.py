"""Per-name write permissions of the peers that send to this node: pure, checked strictly.

``Acl({"peer-id-or-*": {"write": ["prefix*", "exact"]}})``: a peer's own
entry, or else the ``"*"`` entry, lists the top-level names it may write;
a peer with neither may write nothing. A pattern is an exact name, or a
prefix followed by one ``*`` (``"*"`` alone: every name).

The engine drops a received delta *whole* when it touches a name its
sender may not write, and merges none of its causal context: all the
top-level names share one context, and the dots a removal superseded are
not tied to a name, so a delta cannot be cut by name soundly (see
``docs/security.md``, "Access control").

Reads cannot be restricted yet, for the same reason (a reply cut to the
readable names would carry a context claiming the others' dots, or lose
removals), so ``"read"`` may only be ``["*"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agentsync.crdt.ormap import ORMap
from agentsync.crdt.values import MAX_REPLICA_ID_CHARS

ANY_PEER = "*"
RIGHTS = frozenset({"read", "write"})
MAX_PATTERNS = 1024
"""The most patterns one right may list."""


@dataclass(frozen=True, slots=True)
class _Names:
    """The names one right allows: exact ones, and prefixes."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def allows(self, name: str) -> bool:
        return name in self.exact or any(name.startswith(p) for p in self.prefixes)


_NOTHING = _Names(frozenset(), ())


class Acl:
    """Which top-level names each peer may write here (ValueError/TypeError if malformed)."""

    __slots__ = ("_writes",)

    def __init__(self, rules: Mapping[str, Mapping[str, Iterable[str]]]) -> None:
        if not isinstance(rules, Mapping):
            raise TypeError("acl must be a mapping of peer ids (or '*') to rights")
        self._writes: dict[str, _Names] = {}
        for peer, rights in rules.items():
            if type(peer) is not str or not 0 < len(peer) <= MAX_REPLICA_ID_CHARS:
                raise ValueError(f"acl: a peer must be '*' or a node id, not {peer!r}")
            if not isinstance(rights, Mapping):
                raise TypeError(f"acl[{peer!r}] must be a mapping such as {{'write': [...]}}")
            unknown = set(rights) - RIGHTS
            if unknown:
                raise ValueError(f"acl[{peer!r}]: unknown rights {sorted(map(str, unknown))}")
            if "read" in rights and _patterns(peer, "read", rights["read"]) != ["*"]:
                raise ValueError(
                    f"acl[{peer!r}]['read']: only ['*'] is supported; replies cannot be "
                    "restricted to some names soundly yet (docs/security.md, 'Access control')"
                )
            self._writes[peer] = _names(_patterns(peer, "write", rights.get("write", ())))

    def may_write(self, peer: str, name: str) -> bool:
        """Whether ``peer`` may write the top-level name ``name`` here."""
        return self._rule(peer).allows(name)

    def forbidden(self, peer: str, delta: ORMap) -> frozenset[str]:
        """The top-level names ``delta`` touches (removals too) that ``peer`` may not write."""
        rule = self._rule(peer)
        return frozenset(
            str(name) for name in delta._fields if type(name) is not str or not rule.allows(name)
        )

    def _rule(self, peer: str) -> _Names:
        rule = self._writes.get(peer)
        return rule if rule is not None else self._writes.get(ANY_PEER, _NOTHING)


def _patterns(peer: str, right: str, patterns: object) -> list[str]:
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Iterable):
        raise TypeError(f"acl[{peer!r}][{right!r}] must be a list of name patterns")
    listed = list(patterns)
    if len(listed) > MAX_PATTERNS:
        raise ValueError(f"acl[{peer!r}][{right!r}]: more than {MAX_PATTERNS} patterns")
    for pattern in listed:
        if type(pattern) is not str or not pattern:
            raise ValueError(f"acl[{peer!r}][{right!r}]: {pattern!r} is not a name pattern")
        if "*" in pattern[:-1]:
            raise ValueError(
                f"acl[{peer!r}][{right!r}]: {pattern!r} has '*' before its end "
                "(a pattern is a name, or a prefix then one '*')"
            )
    return listed


def _names(patterns: list[str]) -> _Names:
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    return _Names(exact, tuple(p[:-1] for p in patterns if p.endswith("*")))
