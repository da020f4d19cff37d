"""Access control in the engine: write ACLs (deltas dropped whole), and read-only observers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsync.crdt import LWWRegister, ORSet, PNCounter
from agentsync.errors import AccessDeniedError
from agentsync.sync import SyncEngine, decode_message, encode_message
from agentsync.sync.acl import Acl
from tests.sync.simnet import Faults, SimNet, adding

# -- the ACL itself ----------------------------------------------------------------------------


def test_patterns_exact_prefix_and_the_fallback_entry() -> None:
    acl = Acl({"n01": {"write": ["pub*", "inbox"]}, "*": {"write": ["*"]}, "n09": {}})
    assert acl.may_write("n01", "pub") and acl.may_write("n01", "pub-x")
    assert acl.may_write("n01", "inbox") and not acl.may_write("n01", "inbox2")
    assert not acl.may_write("n01", "secret")
    assert acl.may_write("n02", "secret"), "a peer with no entry of its own gets '*'"
    assert not acl.may_write("n09", "pub"), "an entry without 'write' allows nothing"
    assert not Acl({"n01": {"write": ["*"]}}).may_write("n02", "x"), "no entry, no '*': nothing"


BAD: list[tuple[Any, type[Exception], str]] = [
    (["n01"], TypeError, "mapping"),
    ({"": {"write": []}}, ValueError, "peer"),
    ({5: {"write": []}}, ValueError, "peer"),
    ({"n01": ["pub*"]}, TypeError, "mapping"),
    ({"n01": {"writes": ["x"]}}, ValueError, "unknown rights"),
    ({"n01": {"write": "pub*"}}, TypeError, "list"),
    ({"n01": {"write": [5]}}, ValueError, "pattern"),
    ({"n01": {"write": [""]}}, ValueError, "pattern"),
    ({"n01": {"write": ["a*b"]}}, ValueError, "before its end"),
    ({"n01": {"write": ["x"] * 1025}}, ValueError, "more than"),
    ({"n01": {"read": ["pub*"], "write": ["pub*"]}}, ValueError, "observer"),
    ({"n01": {"read": ["a*b"]}}, ValueError, "before its end"),
    ({"n01": {"read": "*"}}, TypeError, "list"),
]


@pytest.mark.parametrize(
    ("rules", "error", "says"), BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)]
)
def test_a_malformed_acl_is_refused_clearly(rules: Any, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        Acl(rules)


def test_read_may_be_everything() -> None:
    assert Acl({"*": {"read": ["*"], "write": ["x"]}}).may_write("n01", "x")


def test_read_patterns_and_their_fallback() -> None:
    acl = Acl({"*": {"read": ["pub*", "inbox"]}, "n01": {"write": ["x"]}, "n02": {"read": []}})
    assert acl.may_read("n03", "pub-a") and acl.may_read("n03", "inbox")
    assert not acl.may_read("n03", "inbox2") and not acl.may_read("n03", "secret")
    assert acl.may_read("n01", "secret"), "an own entry without 'read' reads every name"
    assert not acl.may_read("n02", "pub-a"), "an empty 'read' list reads nothing"
    assert acl.reads("n01") is None and Acl({"n01": {"write": ["x"]}}).reads("n05") is None
    allows = acl.reads("n03")
    assert allows is not None and not allows(5), "a key that is not a str matches no pattern"


# -- write ACLs in a star: n01 and n02 reach each other only through n00 ----------------------


def star(acl: Acl) -> SimNet:
    net = SimNet(3, 3, topology="star")
    net.engines["n00"].acl = acl
    return net


RESTRICTED = Acl({"n01": {"write": ["pub*"]}, "n02": {"write": ["*"]}})


def rounds(net: SimNet, n: int = 4) -> None:
    for _ in range(n):
        for leaf in ("n01", "n02"):
            net.exchange(leaf, "n00")
            net.exchange("n00", leaf)


def test_a_forbidden_delta_is_dropped_and_its_context_not_merged() -> None:
    net = star(RESTRICTED)
    hub, leaf = net.engines["n00"], net.engines["n01"]
    denied: list[tuple[str, frozenset[str]]] = []
    hub.on_denied = lambda sender, names: denied.append((sender, names))
    net.write("n01", "secret", LWWRegister, lambda r: r.set("no"))
    rounds(net)
    assert "secret" not in hub.state.value
    assert not hub.state.context.version_vector.get(leaf.state.replica_id), (
        "the dropped delta's dot must not look seen: a later honest copy would be ignored"
    )
    assert hub.metrics.denied >= 1 and denied[0] == ("n01", frozenset({"secret"}))
    net.write("n01", "pub-notes", ORSet, adding("yes"))
    rounds(net)
    for node in ("n00", "n02"):
        assert net.engines[node].state["pub-notes"].value == {"yes"}
        assert "secret" not in net.engines[node].state.value
    assert net.engines["n00"].state == net.engines["n02"].state


def test_a_delta_mixing_allowed_and_forbidden_names_is_dropped_whole() -> None:
    net = star(RESTRICTED)
    leaf = net.engines["n01"]
    net.write("n01", "pub-a", PNCounter, lambda c: c.increment())
    net.write("n01", "secret", PNCounter, lambda c: c.increment())  # one round: one delta
    rounds(net, 2)
    assert net.engines["n00"].state.value == {}
    assert leaf.state.value.keys() == {"pub-a", "secret"}


def test_a_snapshot_holding_forbidden_names_is_dropped_and_others_repair() -> None:
    net = star(RESTRICTED)
    net.write("n01", "secret", LWWRegister, lambda r: r.set("no"))
    net.write("n02", "open", LWWRegister, lambda r: r.set("yes"))
    rounds(net)
    hub = net.restart("n00")  # empty: it asks its peers for their whole state
    hub.acl = RESTRICTED
    for _ in range(4):
        net.exchange("n00", "n01")
    assert "secret" not in hub.state.value and hub.metrics.denied >= 1
    rounds(net)
    assert hub.state == net.engines["n02"].state and hub.state["open"].value == "yes"


@settings(max_examples=15, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.sampled_from(["pub-a", "pub-b", "secret"]), max_size=12))
def test_allowed_writes_converge_and_forbidden_ones_never_apply(
    seed: int, names: list[str]
) -> None:
    """Random writes on both leaves, one name a round: the hub and the free leaf converge."""
    net = star(RESTRICTED)
    for i, name in enumerate(names):
        writer = ("n01", "n02")[net.rng.randrange(2)]
        net.write(writer, name, ORSet, adding(f"{writer}-{i}"))
        rounds(net, 1)
    rounds(net)
    hub, restricted, free = (net.engines[n] for n in ("n00", "n01", "n02"))  # n01: pub* only
    assert hub.state == free.state, net.where()
    for name, value in hub.state.value.items():
        from_restricted = {v for v in value if v.startswith("n01-")}
        assert not (name == "secret" and from_restricted), "a forbidden write applied"
        mine = {v for v in restricted.state.value.get(name, ()) if v.startswith("n01-")}
        if name != "secret":
            assert mine <= value, "an allowed write of n01 is missing"


# -- read-only observers -------------------------------------------------------------------------


def test_a_read_only_engine_pulls_everything_and_sends_no_state() -> None:
    net = SimNet(4, 2)
    writer = net.engines["n00"]
    observer = net.engines["n01"] = SyncEngine(
        "n01", cluster=net.config["cluster"], state=net.engines["n01"].state, read_only=True
    )
    for k in range(300):
        net.write("n00", "tags", ORSet, adding(f"t{k}"))
    net.recorded = []
    for _ in range(6):
        net.exchange("n00", "n01")
        net.exchange("n01", "n00")
    assert observer.state == writer.state
    sent = [m for m in map(decode_message, (data for _, data in net.recorded)) if m.sender == "n01"]
    assert len(sent) == 12
    assert all(not m.deltas and m.context is None and m.piece is None for m in sent)
    assert observer.delta_buffer_bytes == 0, "an observer buffers nothing to forward"


# -- read ACLs: an observer is sent only the names it may read -----------------------------------


def observed(seed: int, *, late: bool = False) -> SimNet:
    """n00 and n02 write and gossip; n01 is an observer limited to pub* on both.

    Every other peer may read and write every name.
    """
    net = SimNet(seed, 3)
    for node in ("n00", "n02"):
        net.engines[node].acl = Acl({"n01": {"read": ["pub*"]}, "*": {"write": ["*"]}})
    if not late:
        net.engines["n01"] = _observer(net)
    return net


def _observer(net: SimNet) -> SyncEngine:
    return SyncEngine("n01", cluster=net.config["cluster"], state=net.engines["n01"].state,
                      read_only=True)  # fmt: skip


def pull(net: SimNet, server: str, sent: list[bytes]) -> None:
    """The observer n01 pulls from ``server``; every reply it gets is kept in ``sent``."""
    observer, engine = net.engines["n01"], net.engines[server]
    request = net.wire(
        observer, observer.request(server if server in observer.peers else None), "req"
    )
    response, _ = engine.on_request(decode_message(request))
    reply = net.wire(engine, response, "resp")
    sent.append(reply)
    observer.on_response(decode_message(reply))


def secret_free(reply: bytes) -> bool:
    return b"secret" not in reply and b"hidden-" not in reply


def random_writes(net: SimNet, count: int) -> None:
    """Adds, removes and counter bumps on pub-a, pub-b and secret, at n00 or n02."""
    for i in range(count):
        writer = ("n00", "n02")[net.rng.randrange(2)]
        name = net.rng.choice(["pub-a", "pub-b", "secret"])
        element = f"hidden-{i}" if name == "secret" else f"e{i}"
        state = net.engines[writer].state
        roll = net.rng.random()
        if roll < 0.15 and name in state:
            net.engines[writer].record_local(state.remove(name))
        elif roll < 0.35 and name in state and state[name].value:
            victim = net.rng.choice(sorted(state[name].value))
            net.write(writer, name, ORSet, lambda s, v=victim: s.remove(v))
        else:
            net.write(writer, name, ORSet, adding(element))
        net.exchange("n00", "n02")


def settle_with_observer(net: SimNet, sent: list[bytes]) -> None:
    for _ in range(6):
        net.exchange("n00", "n02")
        net.exchange("n02", "n00")
        pull(net, "n00", sent)
        pull(net, "n02", sent)


def visible(state: Any) -> dict[str, Any]:
    return {name: value for name, value in state.value.items() if str(name).startswith("pub")}


@settings(max_examples=12, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.booleans())
def test_an_observer_limited_to_some_names_sees_exactly_them(
    seed: int, writes: int, late: bool
) -> None:
    """The observer holds the writers' pub* names, never a byte of the others, and a vector.

    ``late``: it arrives after the writes, so it catches up by a snapshot.
    """
    net = observed(seed, late=late)
    sent: list[bytes] = []
    for _ in range(writes // 10 if not late else 0):
        random_writes(net, 10)
        pull(net, "n00", sent)
    random_writes(net, writes)
    if late:
        net.engines["n01"] = _observer(net)
    settle_with_observer(net, sent)
    writer, observer = net.engines["n00"], net.engines["n01"]
    assert writer.state == net.engines["n02"].state, net.where()
    assert observer.state.value == visible(writer.state), net.where()
    assert all(map(secret_free, sent)), f"{net.where()}: an unreadable name was sent"
    assert observer.state.context == writer.state.context, (
        "the observer takes the unreadable names' dots as seen: its context stays the writers'"
    )
    assert not observer.state.context._cloud, "and compacts to a version vector"
    if late:
        assert writer.metrics.full_state_fallbacks + net.engines["n02"].metrics.full_state_fallbacks


def test_a_peer_limited_in_reading_must_be_an_observer() -> None:
    """A writer's context would claim the names it was not sent: it is refused, sent nothing."""
    net = observed(7, late=True)  # n01 is not made an observer
    net.write("n00", "secret", ORSet, adding("hidden-1"))
    net.write("n01", "pub-x", ORSet, adding("mine"))
    hub, limited = net.engines["n00"], net.engines["n01"]
    request = limited.request(None)
    with pytest.raises(AccessDeniedError, match="read-only observer"):
        hub.on_request(decode_message(encode_message(request)))
    assert "pub-x" not in hub.state.value, "nothing of a refused message is merged"
    message = hub.request("n01")  # a request to it: no state before it says it is an observer
    assert not message.deltas and message.context is None and message.piece is None
    assert message.limited, "and it says it limits n01"
    with pytest.raises(AccessDeniedError, match="no observer"):  # which a writer refuses
        limited.on_request(decode_message(encode_message(message)))
    assert "pub-x" not in hub.state.value


WORKLOAD_READABLE = ("tags", "hits", "docs")
"""What the limited observer n03 may read of the SimNet workload (not title, notes, flag, kv)."""


@pytest.mark.parametrize("seed", range(6))
def test_a_limited_observer_on_a_faulty_network_holds_exactly_its_names(seed: int) -> None:
    """Loss, duplicates, reordering and partitions; the whole workload on three writers."""
    net = SimNet(seed, 4, faults=Faults(loss=0.2, dup=0.1, reorder=True, max_delay=3))
    acl = Acl({"n03": {"read": list(WORKLOAD_READABLE)}, "*": {"write": ["*"]}})
    for node in ("n00", "n01", "n02"):
        net.engines[node].acl = acl
    observer = net.engines["n03"] = SyncEngine(
        "n03", cluster=net.config["cluster"], state=net.engines["n03"].state, read_only=True
    )
    write = net.random_write
    net.random_write = lambda node_id, op=None: None if node_id == "n03" else write(node_id, op)  # type: ignore[method-assign]
    net.run(40, partitions=0.1)
    net.heal()
    net.flush(everything=True)
    net.faults = Faults()
    writers = [net.engines[n] for n in ("n00", "n01", "n02")]
    for _ in range(60):
        first = writers[0].state
        if all(w.state == first for w in writers) and observer.state.value == {
            name: value for name, value in first.value.items() if name in WORKLOAD_READABLE
        }:
            break
        for node_id in net.ids:
            for other in net.partners(node_id):
                net.exchange(node_id, other)
    else:
        raise AssertionError(f"{net.where()}: not converged: {net.describe()}")
    assert observer.state.value, f"{net.where()}: the workload wrote readable names"
    assert set(observer.state.value) <= set(WORKLOAD_READABLE)
    assert observer.state.context == writers[0].state.context, net.where()
    for writer in writers:
        assert not net.oracle.problems(writer.state), net.where()
