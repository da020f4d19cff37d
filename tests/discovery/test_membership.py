"""Membership alone, on plain-float time and seeded randomness.

Every transition, the backoff of dead members, the probe spacing of
``due()``, the size bound under a flood, the documented detection time (a
small simulation of the Node's rounds), and a state machine that checks the
invariants after any sequence of calls.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentsync.discovery import (
    Member,
    Membership,
    MembershipConfig,
    MemberState,
    Transition,
)
from agentsync.discovery.membership import MIN_NEWS

ALIVE, SUSPECT, DEAD = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD
PEER = "http://10.0.0.2:8000"
OTHER = "http://10.0.0.3:8000"
EXCHANGE_TIMEOUT = 1.0
"""The Node's HTTP exchange timeout on a LAN."""
ROUND_MAX = 0.2 * 1.2
"""The longest gap between the Node's rounds: gossip_interval 0.2 s with +20 % jitter."""


def _membership(seed: int = 1, **config: float) -> Membership:
    return Membership(MembershipConfig(**config), rng=random.Random(seed))  # type: ignore[arg-type]


def _suspect(m: Membership, now: float, url: str = PEER) -> None:
    m.add(url, now=0.0, source="seed")
    m.on_success(url, "peer", 0.0)
    assert m.on_failure(url, now) == Transition(url, "peer", ALIVE, SUSPECT)


def _dead(m: Membership, now: float, url: str = PEER) -> None:
    _suspect(m, now - m.config.suspect_timeout, url)
    assert m.tick(now) == [Transition(url, "peer", SUSPECT, DEAD)]


def _state(m: Membership, url: str = PEER) -> MemberState:
    member = m.get(url)
    assert member is not None
    return member.state


# -- each transition --------------------------------------------------------------


def test_a_new_member_is_alive_never_contacted_and_due_at_once() -> None:
    m = _membership()
    assert m.add(PEER, now=5.0, source="seed")
    assert m.get(PEER) == Member(PEER, None, ALIVE, None, 5.0, "seed")
    assert m.due(5.0) == [PEER]
    assert m.gossip_candidates() == [PEER]


def test_alive_turns_suspect_on_a_failure() -> None:
    m = _membership()
    _suspect(m, 3.0)
    member = m.get(PEER)
    assert member is not None
    assert (member.state, member.since, member.last_contact) == (SUSPECT, 3.0, 0.0)
    assert m.gossip_candidates() == [PEER], "a suspect still gets gossip: it may answer"


def test_suspect_dies_after_suspect_timeout_without_a_success() -> None:
    m = _membership()
    _suspect(m, 3.0)
    assert m.on_failure(PEER, 4.0) is None, "more failures do not restart the suspicion"
    assert m.tick(4.999) == []
    assert m.tick(5.0) == [Transition(PEER, "peer", SUSPECT, DEAD)]
    member = m.get(PEER)
    assert member is not None
    assert (member.state, member.since) == (DEAD, 5.0)
    assert member.retry_at is not None
    assert 5.0 <= member.retry_at <= 5.0 + m.config.retry_initial
    assert m.gossip_candidates() == []


def test_suspect_is_alive_again_on_a_success() -> None:
    m = _membership()
    _suspect(m, 3.0)
    assert m.on_success(PEER, "peer", 4.5) == Transition(PEER, "peer", SUSPECT, ALIVE)
    assert m.get(PEER) == Member(PEER, "peer", ALIVE, 4.5, 4.5, "seed")
    assert m.tick(100.0) == []


def test_dead_is_welcomed_back_on_a_success() -> None:
    m = _membership()
    _dead(m, 10.0)
    m.on_failure(PEER, 11.0)
    assert m.on_success(PEER, "peer-2", 12.0) == Transition(PEER, "peer-2", DEAD, ALIVE)
    assert m.get(PEER) == Member(PEER, "peer-2", ALIVE, 12.0, 12.0, "seed")
    assert m.gossip_candidates() == [PEER]
    m.on_failure(PEER, 13.0)
    m.tick(15.0)
    assert m.on_failure(PEER, 15.5) is None
    retry_at = m.get(PEER).retry_at  # type: ignore[union-attr]
    assert retry_at is not None
    assert retry_at <= 15.5 + 2 * m.config.retry_initial, "the backoff started over"


def test_a_dead_members_retries_back_off_with_full_jitter_up_to_retry_max() -> None:
    windows: dict[int, list[float]] = {}
    for seed in range(200):
        m = _membership(seed)
        _dead(m, 10.0)
        now = 10.0
        for failures in range(1, 12):
            now += 1.0
            assert m.on_failure(PEER, now) is None
            member = m.get(PEER)
            assert member is not None
            assert member.state is DEAD
            assert member.retry_at is not None
            window = min(m.config.retry_max, m.config.retry_initial * 2**failures)
            delay = member.retry_at - now
            assert 0.0 <= delay <= window
            windows.setdefault(failures, []).append(delay)
    for failures, delays in windows.items():
        window = min(30.0, 2.0**failures)
        assert max(delays) > 0.9 * window, "the jitter spans the whole window"
        assert min(delays) < 0.1 * window
    assert max(windows[11]) > 27.0, "a long outage is retried at about retry_max"


def test_a_dead_member_is_due_when_its_retry_comes_and_not_before() -> None:
    m = _membership()
    _dead(m, 10.0)
    retry_at = m.get(PEER).retry_at  # type: ignore[union-attr]
    assert retry_at is not None
    assert PEER not in m.due(math.nextafter(retry_at, 0.0))
    assert m.due(retry_at + m.config.probe_interval) == [PEER]


def test_the_long_dead_are_removed_but_a_seed_never_is() -> None:
    m = _membership(remove_after=60.0)
    m.add(OTHER, now=0.0, source="exchange")
    m.on_success(OTHER, "other", 0.0)
    _dead(m, 10.0, PEER)
    m.on_failure(OTHER, 10.0)
    assert m.tick(12.0) == [Transition(OTHER, "other", SUSPECT, DEAD)]
    assert m.tick(71.9) == []
    assert m.tick(72.0) == [Transition(OTHER, "other", DEAD, None)]
    assert OTHER not in m
    assert m.on_failure(OTHER, 71.0) is None, "a late report on a removed member is ignored"
    for now in range(80, 2000, 7):
        m.on_failure(PEER, float(now))
        assert m.tick(float(now)) == []
        member = m.get(PEER)
        assert member is not None
        assert member.state is DEAD
        assert member.retry_at is not None
        assert member.retry_at <= now + m.config.retry_max
    assert m.remove(PEER), "an explicit remove takes even a seed"
    assert len(m) == 0


# -- the detection time -----------------------------------------------------------


def test_the_default_detection_time_is_at_most_5_s() -> None:
    bound = MembershipConfig().detection_time(EXCHANGE_TIMEOUT, ROUND_MAX)
    assert bound == pytest.approx(4.48)
    assert bound <= 5.0


def _time_to_death(t0: float, seed: int, answer_fast: bool) -> float:
    """Run the Node's rounds against a peer that falls silent at ``t0``.

    Before ``t0`` every exchange with the peer succeeds at once, the gossip
    fanout picks it every round, and its last reply comes at ``t0`` exactly.
    After ``t0`` the gossip passes it over (the worst case: it adds no
    failures) and each probe ``due()`` asks for fails, after the exchange
    timeout, or at once (connection refused) if ``answer_fast``.
    """
    rng = random.Random(seed)
    m = Membership(rng=random.Random(seed))
    m.add(PEER, now=0.0, source="seed")
    failing: list[float] = []
    last_reply_pending = True
    now = rng.uniform(0.0, ROUND_MAX)
    while now < t0 + 60.0:
        if last_reply_pending and t0 <= now:
            m.on_success(PEER, "peer", t0)
            last_reply_pending = False
        for at in sorted(f for f in failing if f <= now):
            m.on_failure(PEER, at)
            failing.remove(at)
        if now < t0:
            m.on_success(PEER, "peer", now)
        if Transition(PEER, "peer", SUSPECT, DEAD) in m.tick(now):
            return now - t0
        for url in m.due(now):
            if now < t0:
                m.on_success(url, "peer", now)
            else:
                failing.append(now + (0.001 if answer_fast else EXCHANGE_TIMEOUT))
        now += rng.uniform(0.8, 1.2) * 0.2
    raise AssertionError("the silent peer never died")


@pytest.mark.parametrize("answer_fast", [False, True])
def test_a_silent_peer_is_dead_within_the_documented_bound(answer_fast: bool) -> None:
    config = MembershipConfig()
    bound = config.detection_time(EXCHANGE_TIMEOUT, ROUND_MAX)
    times = [
        _time_to_death(t0, seed, answer_fast)
        for seed in range(40)
        for t0 in (3.0, 3.05, 3.13, 7.77)
    ]
    assert max(times) <= bound
    floor = config.probe_interval + config.suspect_timeout
    if not answer_fast:
        floor += EXCHANGE_TIMEOUT
        assert max(times) > bound - 0.5, "the simulation reaches near the worst case"
    assert min(times) >= floor, "no failure before the first probe, no death before the timeout"


# -- the probes -------------------------------------------------------------------


def test_an_idle_alive_member_is_probed_every_probe_interval() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="seed")
    probes = []
    for step in range(200):
        now = step / 20
        if m.due(now) == [PEER]:
            probes.append(now)
            m.on_success(PEER, "peer", now)
    assert probes == [float(n) for n in range(10)]


def test_a_member_with_traffic_is_never_probed() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="seed")
    m.due(0.0)
    for step in range(1, 100):
        m.on_success(PEER, "peer", step * 0.5)
        assert m.due(step * 0.5 + 0.25) == []


def test_an_unanswered_probe_is_not_asked_again_within_the_interval() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="seed")
    seen = [now for now in (n * 0.1 for n in range(50)) if m.due(now)]
    assert seen == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def test_a_suspect_is_probed_every_half_interval() -> None:
    m = _membership(suspect_timeout=10.0)
    _suspect(m, 0.5)
    seen = [now for now in (0.5 + n * 0.1 for n in range(30)) if m.due(now)]
    assert seen == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


def test_due_limit_names_the_longest_overdue_first_and_keeps_the_rest() -> None:
    m = _membership()
    urls = [f"http://10.0.1.{i}:8000" for i in range(6)]
    for url in urls:
        m.add(url, now=0.0, source="manual")
    for i, url in reversed(list(enumerate(urls))):
        m.on_success(url, f"n{i}", 1.0 - i / 10)
    assert m.due(5.0, limit=2) == [urls[5], urls[4]]
    assert m.due(5.0, limit=3) == [urls[3], urls[2], urls[1]]
    assert m.due(5.0) == [urls[0]]
    assert m.due(5.5) == []


# -- peers, the bound, samples ----------------------------------------------------


def test_hints_are_capped_per_introducer_and_in_total_until_reached() -> None:
    m = _membership(max_hints=40, max_hints_per_introducer=16)
    flood = [f"http://10.1.{i // 250}.{i % 250}:1" for i in range(100)]
    added = [m.add(url, now=0.0, source="exchange", introducer="rogue") for url in flood]
    assert sum(added) == 16 and m.hints("rogue") == 16
    assert m.add(PEER, now=0.0, source="exchange", introducer="honest"), "others still get in"
    assert m.add(OTHER, now=0.0, source="mdns", introducer="mdns host")
    for n in range(3):
        urls = [f"http://10.2.{n}.{i}:1" for i in range(16)]
        added = [m.add(url, now=0.0, source="exchange", introducer=f"rogue-{n}") for url in urls]
        assert sum(added) == (16 if n < 1 else 6 if n == 1 else 0)
    assert m.hints() == 40
    m.on_success(PEER, "peer", 1.0)  # reached: a member, no longer a hint
    assert (m.hints("honest"), m.hints()) == (0, 39)
    assert m.add("http://10.3.0.1:1", now=1.0, source="exchange", introducer="rogue-2")
    assert m.add("http://typed-in:1", now=1.0, source="manual", introducer="ignored")
    assert m.add("http://stored:1", now=1.0, source="exchange"), "no introducer: not a hint"
    assert m.hints() == 40


def test_a_hint_that_never_answers_is_forgotten_not_retried() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="exchange", introducer="x")
    m.add(OTHER, now=0.0, source="exchange", introducer="x")
    m.on_success(OTHER, "other", 0.0)
    m.on_failure(PEER, 1.0)
    m.on_failure(OTHER, 1.0)
    assert [member.state for member in m.members()] == [SUSPECT, SUSPECT]
    assert m.tick(3.0) == [
        Transition(PEER, None, SUSPECT, None),
        Transition(OTHER, "other", SUSPECT, DEAD),
    ]
    assert PEER not in m and m.hints() == 0
    assert m.add(PEER, now=3.0, source="exchange", introducer="x"), "it may be named again"


def test_a_flood_of_learned_members_stops_at_max_members_but_seeds_get_in() -> None:
    m = _membership(max_members=50)
    m.add(PEER, now=0.0, source="seed")
    flood = [f"http://10.1.{i // 250}.{i % 250}:1" for i in range(5000)]
    added = [m.add(url, now=1.0, source="exchange") for url in flood]
    assert sum(added) == 49
    assert not m.add("http://mdns.local:1", now=1.0, source="mdns")
    assert len(m) == 50
    assert m.add(OTHER, now=2.0, source="seed")
    assert m.add("http://typed-in:1", now=2.0, source="manual")
    assert len(m) == 52
    assert PEER in m
    assert OTHER in m


def test_adding_a_known_url_updates_its_claimed_id_and_can_make_it_a_seed() -> None:
    m = _membership()
    assert m.add(PEER, now=0.0, source="exchange", node_id="claimed")
    assert not m.add(PEER, now=1.0, source="mdns", node_id="claimed-2")
    assert m.get(PEER) == Member(PEER, "claimed-2", ALIVE, None, 0.0, "exchange")
    m.on_success(PEER, "real", 2.0)
    assert not m.add(PEER, now=3.0, source="seed", node_id="a-lie")
    assert m.get(PEER) == Member(PEER, "real", ALIVE, 2.0, 0.0, "seed")
    assert not m.add(PEER, now=3.0, source="exchange")
    assert m.get(PEER).source == "seed"  # type: ignore[union-attr]


def test_news_tells_of_alive_members_this_node_reached_once_each() -> None:
    m = _membership()
    urls = [f"http://10.0.2.{i}:8000" for i in range(10)]
    for i, url in enumerate(urls):
        m.add(url, now=0.0, source="exchange", node_id=f"claimed-{i}")
    for i in range(6):
        m.on_success(urls[i], f"n{i}", 1.0)
    m.on_failure(urls[5], 2.0)
    offered = [(f"n{i}", urls[i]) for i in range(5)]  # not hearsay, not a suspect
    assert m.news(0, 16) == (offered, 6)
    first, cursor = m.news(0, 3)
    assert first == offered[:3]
    rest, cursor = m.news(cursor, 16)
    assert first + rest == offered
    assert m.news(cursor, 16) == ([], cursor), "an idle peer is told of nothing"
    m.on_success(urls[0], "n0", 3.0)
    assert m.news(cursor, 16) == ([], cursor), "a known member is no news"
    m.on_success(urls[0], "n0-restarted", 4.0)
    m.on_success(urls[6], "n6", 4.0)
    assert m.news(cursor, 16)[0] == [("n0-restarted", urls[0]), ("n6", urls[6])]
    assert m.news(0, 0) == ([], 0)
    assert _membership(seed=9).news(0, 4) == ([], 0)


def test_news_is_compacted_and_old_cursors_read_it_from_the_start() -> None:
    m = _membership()
    url = "http://10.0.2.1:8000"
    m.add(url, now=0.0, source="seed")
    _, cursor = m.news(0, 16)
    for i in range(200):  # one member restarting under new ids: the news must not grow
        m.on_success(url, f"n{i}", float(i))
    assert len(m._news) <= 2 * MIN_NEWS
    assert m.news(cursor, 16)[0] == [("n199", url)]
    assert m.news(0, 16)[0] == [("n199", url)]


def test_a_same_seed_gives_the_same_choices() -> None:
    def run(seed: int) -> tuple[list[str], float | None]:
        m = _membership(seed)
        for i in range(20):
            m.add(f"http://10.0.3.{i}:1", now=0.0, source="mdns")
            m.on_success(f"http://10.0.3.{i}:1", f"n{i}", 0.0)
        _dead(m, 10.0)
        return m.due(20.0, limit=5), m.get(PEER).retry_at  # type: ignore[union-attr]

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_members_are_sorted_snapshots() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="seed")
    m.add(OTHER, now=0.0, source="manual")
    m.add("http://10.0.0.1:8000", now=0.0, source="mdns")
    members = m.members()
    assert [member.url for member in members] == sorted([PEER, OTHER, "http://10.0.0.1:8000"])
    m.on_failure(PEER, 1.0)
    assert members[1].state is ALIVE, "a snapshot does not change under the caller"
    assert MemberState("suspect") is SUSPECT, "the str value is what a report shows"


def test_time_never_runs_backwards() -> None:
    m = _membership()
    m.add(PEER, now=10.0, source="seed")
    m.on_success(PEER, "peer", 9.0)
    assert m.get(PEER).last_contact == 10.0  # type: ignore[union-attr]
    m.on_failure(PEER, 5.0)
    assert m.get(PEER).since == 10.0  # type: ignore[union-attr]


def test_reports_on_unknown_urls_are_ignored() -> None:
    m = _membership()
    assert m.on_success(PEER, "peer", 1.0) is None
    assert m.on_failure(PEER, 1.0) is None
    assert PEER not in m
    assert not m.remove(PEER)
    assert m.get(PEER) is None
    assert 42 not in m


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"probe_interval": 0.0}, ValueError),
        ({"suspect_timeout": -1.0}, ValueError),
        ({"retry_initial": math.inf}, ValueError),
        ({"retry_max": math.nan}, ValueError),
        ({"retry_initial": 5.0, "retry_max": 2.0}, ValueError),
        ({"remove_after": -0.1}, ValueError),
        ({"max_members": 0}, ValueError),
        ({"max_members": 1.5}, TypeError),
        ({"probe_interval": "1"}, TypeError),
        ({"probe_interval": True}, TypeError),
    ],
)
def test_a_bad_config_is_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        MembershipConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_arguments_are_refused_with_a_clear_error() -> None:
    m = _membership()
    with pytest.raises(TypeError, match="URL is a str"):
        m.add(b"http://x:1", now=0.0, source="seed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too long"):
        m.add("http://" + "x" * 3000, now=0.0, source="seed")
    with pytest.raises(ValueError, match="empty"):
        m.add("", now=0.0, source="seed")
    with pytest.raises(ValueError, match="has spaces"):
        m.add("http://a b:1", now=0.0, source="seed")
    with pytest.raises(ValueError, match="source must be one of"):
        m.add(PEER, now=0.0, source="gossip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        m.add(PEER, now=math.nan, source="seed")
    with pytest.raises(TypeError, match="now must be a number"):
        m.tick(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node_id"):
        m.add(PEER, now=0.0, source="seed", node_id="")
    with pytest.raises(TypeError, match="node_id"):
        m.on_success(PEER, None, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cursor must be"):
        m.news(-1, 1)
    with pytest.raises(TypeError, match="limit must be"):
        m.due(0.0, limit=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng"):
        Membership(rng=None)  # type: ignore[arg-type]
    assert len(m) == 0, "nothing was added by a refused call"


def test_settle_keeps_one_member_per_node_the_most_directly_learned() -> None:
    m = _membership()
    routed, on_link, seed = "http://10.1.0.3:80", "http://10.2.0.3:80", "http://10.3.0.3:80"
    m.add(routed, now=0.0, node_id="r", source="exchange")  # a peer named it first
    m.on_success(routed, "r", 0.0)
    assert m.settle(routed) == []  # the only one
    m.add(on_link, now=1.0, node_id="r", source="mdns")  # then mDNS found it on this subnet
    m.on_success(on_link, "r", 1.0)
    assert m.settle(on_link) == [Transition(routed, "r", MemberState.ALIVE, None)]
    assert list(m) == [on_link]
    m.add(routed, now=2.0, node_id="r", source="exchange")  # named again by a peer
    m.on_success(routed, "r", 2.0)
    assert m.settle(routed) == [Transition(routed, "r", MemberState.ALIVE, None)]
    m.add(seed, now=3.0, source="seed")  # configured: it stays, and mDNS's twin goes
    m.on_success(seed, "r", 3.0)
    assert m.settle(seed) == [Transition(on_link, "r", MemberState.ALIVE, None)]
    assert list(m) == [seed]
    assert m.settle("http://10.9.9.9:80") == []  # unknown: nothing


def test_of_two_named_by_peers_the_first_stays_while_alive() -> None:
    m = _membership()
    first, second = "http://10.1.0.3:80", "http://10.2.0.3:80"
    for url in (first, second):
        m.add(url, now=0.0, node_id="r", source="exchange")
        m.on_success(url, "r", 0.0)
    assert m.settle(second) == [Transition(second, "r", MemberState.ALIVE, None)]
    m.add(second, now=1.0, node_id="r", source="exchange")
    assert m.on_failure(first, 1.0) == Transition(first, "r", ALIVE, SUSPECT)  # not alive now
    m.on_success(second, "r", 1.0)
    assert m.settle(second) == []  # the second may stay
    assert sorted(m) == [first, second]


# -- any sequence of calls keeps the invariants -----------------------------------

POOL = [f"http://10.9.0.{i}:80" for i in range(8)]
SOURCE = st.sampled_from(["seed", "mdns", "exchange", "manual"])
CONFIG = MembershipConfig(
    probe_interval=1.0, suspect_timeout=2.0, retry_initial=0.5, retry_max=4.0,
    remove_after=5.0, max_members=4,
)  # fmt: skip


class MembershipMachine(RuleBasedStateMachine):
    """Random calls at non-decreasing times on a small pool with a bound of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.m = Membership(CONFIG, rng=random.Random(0))
        self.now = 0.0
        self.named: dict[str, float] = {}
        """When ``due()`` last named each URL (forgotten when it goes)."""

    @rule(dt=st.sampled_from([0.0, 0.3, 0.5, 1.0, 2.0, 6.0]) | st.floats(0.0, 6.0))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule(url=st.sampled_from(POOL), source=SOURCE, node_id=st.none() | st.just("said"))
    def add(self, url: str, source: str, node_id: str | None) -> None:
        before = len(self.m)
        known = url in self.m
        new = self.m.add(url, now=self.now, node_id=node_id, source=source)  # type: ignore[arg-type]
        assert new == (len(self.m) == before + 1)
        assert not (known and new)
        if new:
            self.named.pop(url, None)

    @rule(url=st.sampled_from(POOL), node_id=st.sampled_from(["a", "b"]))
    def success(self, url: str, node_id: str) -> None:
        self.m.on_success(url, node_id, self.now)
        member = self.m.get(url)
        if member is not None:
            assert (member.state, member.node_id, member.last_contact) == (ALIVE, node_id, self.now)
            assert member.retry_at is None

    @rule(url=st.sampled_from(POOL))
    def failure(self, url: str) -> None:
        old = self.m.get(url)
        self.m.on_failure(url, self.now)
        new = self.m.get(url)
        if old is not None and new is not None:
            assert new.state is (DEAD if old.state is DEAD else SUSPECT)

    @rule()
    def tick(self) -> None:
        for change in self.m.tick(self.now):
            if change.new is None:
                self.named.pop(change.url, None)
        for member in self.m.members():
            if member.state is SUSPECT:
                assert self.now - member.since < CONFIG.suspect_timeout
            if member.state is DEAD and member.source != "seed":
                assert self.now - member.since < CONFIG.remove_after

    @rule(url=st.sampled_from(POOL))
    def settle(self, url: str) -> None:
        entry = self.m.get(url)
        pinned = {m.url for m in self.m.members() if m.source in ("seed", "manual")}
        for change in self.m.settle(url):
            assert change.new is None and change.url not in pinned
            assert change.node_id == entry.node_id  # type: ignore[union-attr]
            self.named.pop(change.url, None)
        entry = self.m.get(url)
        if entry is not None and entry.last_contact is not None:
            twins = [
                m for m in self.m.members()
                if m.node_id == entry.node_id and m.last_contact is not None and m.url != url
            ]  # fmt: skip
            assert all(m.source != "exchange" or entry.source == "exchange" for m in twins)

    @rule(url=st.sampled_from(POOL))
    def remove(self, url: str) -> None:
        known = url in self.m
        assert self.m.remove(url) == known
        assert url not in self.m
        self.named.pop(url, None)

    @rule(limit=st.none() | st.integers(0, 3))
    def due(self, limit: int | None) -> None:
        urls = self.m.due(self.now, limit=limit)
        assert len(urls) == len(set(urls))
        assert limit is None or len(urls) <= limit
        for url in urls:
            last = self.named.get(url)
            if last is not None:  # compared as sums: a difference of float sums rounds down
                assert self.now >= last + CONFIG.probe_interval / 2
                if self.m.get(url).state is not SUSPECT:  # type: ignore[union-attr]
                    assert self.now >= last + CONFIG.probe_interval
            self.named[url] = self.now

    @precondition(lambda self: len(self.m) > 0)
    @rule(k=st.integers(0, 5), cursor=st.integers(0, 50))
    def news(self, k: int, cursor: int) -> None:
        pairs, after = self.m.news(cursor, k)
        assert len(pairs) <= k
        assert after >= 0
        for node_id, url in pairs:
            member = self.m.get(url)
            assert member is not None
            assert member.state is ALIVE
            assert member.node_id == node_id

    @invariant()
    def holds(self) -> None:
        members = self.m.members()
        urls = [member.url for member in members]
        assert urls == sorted(set(urls))
        assert len(self.m) == len(members)
        pinned = sum(member.source in ("seed", "manual") for member in members)
        assert len(self.m) <= CONFIG.max_members + pinned
        for member in members:
            assert isinstance(member.state, MemberState)
            assert member.since <= self.now
            assert member.last_contact is None or member.last_contact <= self.now
            assert (member.state is DEAD) == (member.retry_at is not None)
            if member.retry_at is not None:
                assert member.retry_at <= self.now + CONFIG.retry_max
        candidates = set(self.m.gossip_candidates())
        assert candidates == {member.url for member in members if member.state is not DEAD}


TestMembershipMachine = MembershipMachine.TestCase
TestMembershipMachine.settings = settings(stateful_step_count=80)


def test_only_an_exchange_confirms_a_members_id() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="exchange", node_id="claimed")
    m.add(OTHER, now=0.0, source="seed")
    assert list(m) == [PEER, OTHER], "iteration keeps the order members became known"
    assert m.peer_id(PEER) is None and m.url_of("claimed") is None, "a claim is not an id"
    m.on_success(PEER, "real", 1.0)
    assert m.peer_id(PEER) == "real" and m.url_of("real") == PEER
    assert m.peer_id("http://10.9.9.9:1") is None and m.url_of("nobody") is None


# -- url_of: an index kept in step with the members ------------------------------

IDS = ["a", "b", "c"]


def _first_reached(m: Membership, node_id: str) -> str | None:
    """``url_of``'s definition: the first member, in the order they became known, reached as it."""
    for url in m:
        member = m.get(url)
        assert member is not None
        if member.node_id == node_id and member.last_contact is not None:
            return url
    return None


class UrlOfMachine(RuleBasedStateMachine):
    """Random calls on 6 URLs and 3 ids; after each, ``url_of`` agrees with a scan of members."""

    def __init__(self) -> None:
        super().__init__()
        self.m = Membership(CONFIG, rng=random.Random(0))
        self.now = 0.0

    @rule(dt=st.sampled_from([0.0, 1.0, 2.0, 6.0]))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule(url=st.sampled_from(POOL[:6]), source=SOURCE, node_id=st.none() | st.sampled_from(IDS))
    def add(self, url: str, source: str, node_id: str | None) -> None:
        self.m.add(url, now=self.now, node_id=node_id, source=source)  # type: ignore[arg-type]

    @rule(url=st.sampled_from(POOL[:6]), node_id=st.sampled_from(IDS))
    def success(self, url: str, node_id: str) -> None:
        self.m.on_success(url, node_id, self.now)

    @rule(url=st.sampled_from(POOL[:6]))
    def failure(self, url: str) -> None:
        self.m.on_failure(url, self.now)

    @rule()
    def tick(self) -> None:
        self.m.tick(self.now)

    @rule(url=st.sampled_from(POOL[:6]))
    def settle(self, url: str) -> None:
        self.m.settle(url)

    @rule(url=st.sampled_from(POOL[:6]))
    def remove(self, url: str) -> None:
        self.m.remove(url)

    @invariant()
    def url_of_is_the_first_member_reached_as_the_id(self) -> None:
        for node_id in [*IDS, "nobody"]:
            assert self.m.url_of(node_id) == _first_reached(self.m, node_id), node_id


TestUrlOfMachine = UrlOfMachine.TestCase
TestUrlOfMachine.settings = settings(max_examples=100, stateful_step_count=40)


def test_url_of_names_the_first_known_of_twins_that_settle_keeps() -> None:
    m = _membership()
    m.add(PEER, now=0.0, source="seed")
    m.add(OTHER, now=0.0, source="manual")
    m.on_success(OTHER, "twin", 1.0)
    assert m.url_of("twin") == OTHER
    m.on_success(PEER, "twin", 1.0)  # reached later, but known first
    assert m.settle(PEER) == [] and m.settle(OTHER) == [], "configured twins both stay"
    assert m.url_of("twin") == PEER
    m.remove(PEER)
    assert m.url_of("twin") == OTHER
    m.add(PEER, now=2.0, source="seed")
    m.on_success(PEER, "twin", 2.0)
    assert m.url_of("twin") == OTHER, "known again, PEER now comes after OTHER"
    m.on_success(OTHER, "restarted", 3.0)
    assert (m.url_of("twin"), m.url_of("restarted")) == (PEER, OTHER)
    m.remove(OTHER)
    assert (m.url_of("twin"), m.url_of("restarted")) == (PEER, None)
