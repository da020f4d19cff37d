"""Per-name permissions of this node's peers: pure, checked strictly.

``Acl({"peer-id-or-*": {"read": [...], "write": [...]}})``: a peer's own
entry, or else the ``"*"`` entry, is its rule. A pattern is an exact name,
or a prefix followed by one ``*`` (``"*"`` alone: every name).

*Write*: the top-level names the peer may write here; a rule without
``"write"`` (or no rule) allows none. The engine drops a received delta
*whole* when it touches a name its sender may not write, and merges none
of its causal context: all the top-level names share one context, and the
dots a removal superseded are not tied to a name, so a delta cannot be cut
by name soundly (see ``docs/security.md``, "Access control").

*Read*: the top-level names the peer is sent; a rule without ``"read"``
(or no rule) allows every name. A peer limited to some names must be a
read-only observer and may write nothing: what it is sent holds only its
names' entries but the *whole* causal context, so it takes the other
names' writes as seen and never merges them. That keeps its context a
version vector, and is sound only because an observer sends no state on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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

    def allows_key(self, key: object) -> bool:
        """``allows`` for any map key: a name that is not a str matches no pattern."""
        return type(key) is str and self.allows(key)


_NOTHING = _Names(frozenset(), ())


class Acl:
    """Which top-level names each peer may read and write here (ValueError/TypeError if not)."""

    __slots__ = ("_reads", "_writes")

    def __init__(self, rules: Mapping[str, Mapping[str, Iterable[str]]]) -> None:
        if not isinstance(rules, Mapping):
            raise TypeError("acl must be a mapping of peer ids (or '*') to rights")
        self._writes: dict[str, _Names] = {}
        self._reads: dict[str, _Names | None] = {}
        for peer, rights in rules.items():
            if type(peer) is not str or not 0 < len(peer) <= MAX_REPLICA_ID_CHARS:
                raise ValueError(f"acl: a peer must be '*' or a node id, not {peer!r}")
            if not isinstance(rights, Mapping):
                raise TypeError(f"acl[{peer!r}] must be a mapping such as {{'write': [...]}}")
            unknown = set(rights) - RIGHTS
            if unknown:
                raise ValueError(f"acl[{peer!r}]: unknown rights {sorted(map(str, unknown))}")
            reads = _patterns(peer, "read", rights.get("read", ("*",)))
            writes = _patterns(peer, "write", rights.get("write", ()))
            self._reads[peer] = None if "*" in reads else _names(reads)
            self._writes[peer] = _names(writes)
            if self._reads[peer] is not None and writes:
                raise ValueError(
                    f"acl[{peer!r}]: a peer limited in what it reads must be a read-only "
                    "observer, so it may write nothing here (docs/security.md, 'Access control')"
                )

    def may_write(self, peer: str, name: str) -> bool:
        """Whether ``peer`` may write the top-level name ``name`` here."""
        return self._rule(peer).allows(name)

    def forbidden(self, peer: str, delta: ORMap) -> frozenset[str]:
        """The top-level names ``delta`` touches (removals too) that ``peer`` may not write."""
        rule = self._rule(peer)
        return frozenset(str(name) for name in delta._fields if not rule.allows_key(name))

    def reads(self, peer: str) -> Callable[[object], bool] | None:
        """Whether ``peer`` may read a top-level name here; None: it may read every name."""
        rule = self._reads[peer] if peer in self._reads else self._reads.get(ANY_PEER)
        return None if rule is None else rule.allows_key

    def may_read(self, peer: str, name: str) -> bool:
        """Whether ``peer`` is sent the top-level name ``name`` by this node."""
        allows = self.reads(peer)
        return allows is None or allows(name)

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
