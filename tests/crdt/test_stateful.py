"""Rule-based state machines: replicas that write, gossip deltas and merge states.

Each machine runs 2-4 replicas of one type (ORSet, counters, LWWMap, nested
ORMaps, and random specs) on skewed deterministic clocks. Rules interleave
writes, deliveries of buffered deltas (any delta, to any replica, in any
order, any number of times, sometimes through the wire form), deliveries of
delta groups, full-state merges and clock ticks. After every step, every
replica reads what the reference model of ``strategies.py`` predicts; at the
end, every delta is delivered to every replica and they must all converge.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agentsync.crdt import CRDT, GCounter, LWWMap, ORSet, PNCounter
from tests.crdt.strategies import (
    DEEP,
    EVERY_NESTED,
    NAMED_SPECS,
    RIDS,
    SKEWS,
    TICKS,
    WIRE,
    Spec,
    World,
    examples,
    join_all,
    ormap,
    specs,
)

SETTINGS = settings(stateful_step_count=30)


class ReplicasMachine(RuleBasedStateMachine):
    """Replicas of ``SPEC`` (drawn from ``SPECS`` when that is set)."""

    SPEC: ClassVar[Spec | None] = None
    SPECS: ClassVar[st.SearchStrategy[Spec] | None] = None

    world: World

    @initialize(
        data=st.data(),
        n=st.integers(2, 4),
        skews=st.lists(SKEWS, min_size=4, max_size=4),
    )
    def start(self, data: st.DataObject, n: int, skews: list[int]) -> None:
        spec = self.SPEC if self.SPEC is not None else data.draw(self.SPECS)  # type: ignore[arg-type]
        self.world = World(spec, dict(zip(RIDS[:n], skews, strict=False)))
        self.forks: list[tuple[CRDT, CRDT, Any]] = []

    def rid(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.world.rids))

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        self.world.mutate(data.draw, self.rid(data))

    @rule(data=st.data())
    def write_twice(self, data: st.DataObject) -> None:
        """Two writes on one replica in a row: their deltas go out separately."""
        rid = self.rid(data)
        self.world.mutate(data.draw, rid)
        self.world.mutate(data.draw, rid)

    @precondition(lambda self: self.world.sent)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Any buffered delta, to any replica: out of order, duplicated, or its own."""
        index = data.draw(st.integers(0, len(self.world.sent) - 1))
        self.world.deliver(index, self.rid(data), wire=data.draw(WIRE))

    @precondition(lambda self: self.world.sent)
    @rule(data=st.data())
    def deliver_group(self, data: st.DataObject) -> None:
        """A delta group: some buffered deltas joined (in any order) before delivery."""
        last = len(self.world.sent) - 1
        indices = data.draw(st.lists(st.integers(0, last), min_size=1, max_size=6))
        self.world.deliver_group(indices, self.rid(data))

    @precondition(lambda self: self.world.sent)
    @rule(data=st.data())
    def deliver_recent_backwards(self, data: st.DataObject) -> None:
        """The newest deltas, newest first: the worst order for causal delivery."""
        rid = self.rid(data)
        count = data.draw(st.integers(1, 5))
        for index in reversed(range(max(0, len(self.world.sent) - count), len(self.world.sent))):
            self.world.deliver(index, rid)

    @rule(data=st.data())
    def merge_state(self, data: st.DataObject) -> None:
        self.world.merge(self.rid(data), self.rid(data), wire=data.draw(WIRE))

    @rule(dt=TICKS)
    def tick(self, dt: int) -> None:
        self.world.time.advance(dt)

    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        """Carry on with a copy of a replica; the original must stay as it was."""
        rid = self.rid(data)
        old = self.world.replicas[rid]
        self.forks.append((old, old.copy(), old.value))
        self.world.replicas[rid] = old.copy()

    @invariant()
    def forks_stay_put(self) -> None:
        for old, twin, value in getattr(self, "forks", ()):
            assert old == twin and old.value == value, "a copy shares state with its original"

    @invariant()
    def every_replica_reads_the_model(self) -> None:
        if hasattr(self, "world"):
            self.world.check_all()

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        world = self.world
        everything = join_all(world.replicas.values())
        count = len(world.sent)
        orders = [list(reversed(range(count))), [*range(count), *range(0, count, 2)]]
        for i, rid in enumerate(world.rids):
            for index in orders[i % 2]:
                world.deliver(index, rid)
        states = list(world.replicas.values())
        for state in states:
            assert state == states[0], "replicas did not converge"
            assert state == everything
        expect = world.model.value(world.everything())
        for state in states:
            assert state.value == expect


class ORSetMachine(ReplicasMachine):
    SPEC = Spec(ORSet)


class PNCounterMachine(ReplicasMachine):
    SPEC = Spec(PNCounter)


class LWWMapMachine(ReplicasMachine):
    SPEC = Spec(LWWMap)


class NestedORMapMachine(ReplicasMachine):
    """ORMap of ORSet, counter and LWWMap, and an ORMap of ORMaps three deep."""

    SPEC = ormap(s=ORSet, n=PNCounter, g=GCounter, m=LWWMap, deep=DEEP)


class DeepORMapMachine(ReplicasMachine):
    """ORMap in ORMap in ORMap, with non-str keys on the way."""

    SPEC = DEEP


class ConflictingTypesMachine(ReplicasMachine):
    """Replicas create the same keys as different types."""

    SPEC = NAMED_SPECS["ORMap[conflicts]"]


class EveryNestedMachine(ReplicasMachine):
    SPEC = EVERY_NESTED


class RandomSpecMachine(ReplicasMachine):
    SPECS = specs()


def _case(machine: type[ReplicasMachine], **kw: Any) -> Any:
    case = machine.TestCase
    case.settings = settings(SETTINGS, **kw)
    return case


TestORSet = _case(ORSetMachine, max_examples=examples(40))
TestPNCounter = _case(PNCounterMachine, max_examples=examples(40))
TestLWWMap = _case(LWWMapMachine, max_examples=examples(40))
TestNestedORMap = _case(NestedORMapMachine, max_examples=examples(50))
TestDeepORMap = _case(DeepORMapMachine, max_examples=examples(40))
TestConflictingTypes = _case(ConflictingTypesMachine, max_examples=examples(40))
TestEveryNested = _case(EveryNestedMachine, max_examples=examples(30))
TestRandomSpec = _case(RandomSpecMachine, max_examples=examples(50))
