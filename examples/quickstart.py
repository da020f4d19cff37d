"""Quick start: two replicas of a shared map, a delta each way, the same state.

Run: python examples/quickstart.py
"""

from agentsync.crdt import LWWMap, ORSet, decode, encode

# Each agent holds its own replica, named by a replica id unique to that agent.
alice = ORSet("alice")
bob = ORSet("bob")

# A write applies at once and returns a small delta to send to the others.
delta = alice.add("research")
bob.merge(decode(encode(delta)))  # bytes on the wire, merged on arrival

# Concurrent writes: Bob removes what he saw while Alice re-adds it.
from_bob = bob.remove("research")
from_alice = alice.add("research")
alice.merge(from_bob)
bob.merge(from_alice)
assert alice == bob and "research" in alice  # add-wins
print("set:", sorted(alice.value))

# Plain values under keys: the last writer wins, by a hybrid logical clock.
notes_a, notes_b = LWWMap("alice"), LWWMap("bob")
notes_b.merge(notes_a.set("topic", "CRDTs"))
notes_a.merge(notes_b.set("topic", "delta CRDTs"))  # written after seeing "CRDTs"
assert notes_a.value == notes_b.value == {"topic": "delta CRDTs"}
print("map:", notes_a.value)
