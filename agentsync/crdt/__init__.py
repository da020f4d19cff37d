"""Delta-state CRDTs: pure data types with no I/O and no global clock.

Every mutator applies locally and returns a delta, an instance of the same
type that any replica can ``merge``. See ``docs/crdts.md`` for each type's
behaviour under concurrency.
"""

from agentsync.crdt.base import CRDT
from agentsync.crdt.codec import decode, encode, register_types
from agentsync.crdt.counters import GCounter, PNCounter
from agentsync.crdt.dots import CausalContext, Dot
from agentsync.crdt.ewflag import EWFlag
from agentsync.crdt.gset import GSet
from agentsync.crdt.hlc import ClockSkewError, HybridLogicalClock
from agentsync.crdt.lwwmap import LWWMap
from agentsync.crdt.ormap import ORMap
from agentsync.crdt.orset import ORSet
from agentsync.crdt.registers import LWWRegister, MVRegister

CRDT_TYPES: tuple[type[CRDT], ...] = (
    GCounter,
    PNCounter,
    GSet,
    ORSet,
    LWWRegister,
    MVRegister,
    EWFlag,
    LWWMap,
    ORMap,
)
"""Every CRDT type, in the order ORMap reads show a key's types."""

register_types(*CRDT_TYPES)

__all__ = [
    "CRDT",
    "CRDT_TYPES",
    "CausalContext",
    "ClockSkewError",
    "Dot",
    "EWFlag",
    "GCounter",
    "GSet",
    "HybridLogicalClock",
    "LWWMap",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "ORSet",
    "PNCounter",
    "decode",
    "encode",
]
