"""Who the peers are and whether they answer: a sans-IO SWIM-style failure detector.

Each member is ``alive``, ``suspect`` or ``dead``, judged from the sync
exchanges the Node already runs and, on a link that has been idle for
``probe_interval``, from a probe (an ordinary exchange the Node starts
because ``due()`` names the member). As in SWIM (Das, Gupta and Motivala,
DSN 2002) a failure only makes a member *suspect*; it is declared *dead*
when no exchange has succeeded for ``suspect_timeout`` after that, so one
slow reply under load does not drop a peer. Any success makes a member alive
again, dead or not ("welcomed back"). A dead member is retried with
exponential backoff and full jitter, and forgotten after ``remove_after``;
a seed never is: it stays dead and keeps being retried at ``retry_max``.

Like the sync engine this module never touches a socket, a clock or a
thread: time is passed in as ``now`` (monotonic seconds) and randomness
comes from a caller's ``random.Random``, so tests drive it with plain floats.

**How this differs from SWIM, and why.** SWIM probes one random member per
protocol period, so a failure is first noticed by *someone* after
e/(e-1) ≈ 1.58 periods on average, then spread by gossip in O(log N)
periods; memberlist then waits a suspicion timeout of
4 · max(1, log10 N) probe intervals (4 s at N ≤ 10) before it declares the
member dead. Here each node judges each member itself, from its own
exchanges, and probes every member that its random gossip left idle for a
probe interval. That costs O(N) small exchanges per second per node
instead of O(1), fine to a few hundred nodes, but it buys a detection time
that does not depend on N or on dissemination, and it needs no new message:
the probe *is* a sync exchange, which an idle link already makes cheap
(about 80 bytes both ways). There are no indirect probes (ping-req) yet and
suspicion is local: a member is not told it is suspected, and other nodes'
suspicions neither confirm nor refute this node's.

**Detection time.** A peer that falls silent at t0 had its last success at
t0 at the latest, so it is due for a probe by t0 + probe_interval; the
probe fails by one exchange timeout later, making it suspect; it is dead
``suspect_timeout`` after that. Each step may wait for the Node's next call
of ``due()`` and ``tick()`` (one gossip round, at most 0.24 s with the
Node's 0.2 s interval and ±20 % jitter). With the defaults and a 1 s
exchange timeout: 1.0 + 1.0 + 2.0 + 2 · 0.24 = 4.48 s ≤ 5 s on a LAN.
``MembershipConfig.detection_time`` computes it.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal, get_args

from agentsync.crdt.values import MAX_REPLICA_ID_CHARS

Source = Literal["seed", "mdns", "exchange", "manual"]
"""How a member became known: configured, found on the LAN, told by a peer, or added by hand."""
SOURCES: frozenset[str] = frozenset(get_args(Source))
LEARNED_SOURCES: frozenset[str] = frozenset({"mdns", "exchange"})
_TRUST: dict[str, int] = {"manual": 0, "seed": 0, "mdns": 1, "exchange": 2}
"""How directly a URL was learned: configured, heard on this LAN, or named by a peer."""
"""Sources another host controls: only these count against ``max_members``."""
MAX_URL_CHARS = 2048
"""The longest URL accepted (the same bound as ``transport.urls``)."""
MIN_NEWS = 64
"""News is compacted only past twice this many items (or twice the members)."""
_MAX_EXPONENT = 64
"""Past this many failures the backoff window is capped anyway; it keeps 2**n small."""


class MemberState(str, enum.Enum):
    """How this node judges a member; the str values are what ``node.members()`` reports."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member, for ``node.members()``, health and tests."""

    url: str
    node_id: str | None
    """The id its last successful exchange gave (or a peer claimed); None until then."""
    state: MemberState
    last_contact: float | None
    """When an exchange with it last succeeded (monotonic seconds); None if never."""
    since: float
    """When it entered its state."""
    source: Source
    retry_at: float | None = None
    """When a dead member is due for its next retry; None unless dead."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a member's state, for the Node to log and to act on."""

    url: str
    node_id: str | None
    old: MemberState
    new: MemberState | None
    """None: the member was removed (dead for ``remove_after``)."""


@dataclass(frozen=True)
class MembershipConfig:
    """The timings of the failure detector (seconds) and its size bound.

    The defaults detect a silent peer within 5 s on a LAN with the Node's
    defaults: ``detection_time`` computes the bound, and ``docs/membership.md``
    ("Timings and the detection time") adds it up step by step.
    """

    probe_interval: float = 1.0
    """A member with no successful exchange for this long is probed (memberlist's 1 s)."""
    suspect_timeout: float = 2.0
    """Suspect this long with no success: dead."""
    retry_initial: float = 1.0
    """The first retry of a dead member comes within this long; each failure doubles it."""
    retry_max: float = 30.0
    """The backoff window stops growing here (memberlist's push-pull period)."""
    remove_after: float = 300.0
    """Dead this long: forgotten, unless a seed."""
    max_members: int = 1024
    """At most this many members; past it, learned ones (mdns, exchange) are refused."""
    max_hints: int = 128
    """At most this many hints (members named by an introducer, never reached) at once."""
    max_hints_per_introducer: int = 16
    """At most this many hints from one introducer at once (a message names up to 16)."""

    def __post_init__(self) -> None:
        for name in ("probe_interval", "suspect_timeout", "retry_initial", "retry_max"):
            _check_seconds(getattr(self, name), name, positive=True)
        _check_seconds(self.remove_after, "remove_after", positive=False)
        if self.retry_initial > self.retry_max:
            raise ValueError("retry_initial must not exceed retry_max")
        for name in ("max_members", "max_hints", "max_hints_per_introducer"):
            if _check_count(getattr(self, name), name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def detection_time(self, exchange_timeout: float, round_interval: float = 0.0) -> float:
        """The longest a silent peer stays undeclared dead, if probed as ``due()`` says.

        ``round_interval`` is the longest gap between the caller's calls of
        ``due()`` and ``tick()``: a probe may start, and a death be seen, one
        round late.
        """
        _check_seconds(exchange_timeout, "exchange_timeout", positive=False)
        _check_seconds(round_interval, "round_interval", positive=False)
        return self.probe_interval + exchange_timeout + self.suspect_timeout + 2 * round_interval


@dataclass(slots=True)
class _Entry:
    url: str
    node_id: str | None
    source: Source
    state: MemberState
    since: float
    last_contact: float | None = None
    probed: float | None = None
    """When ``due()`` last named it: it is not named again before its spacing."""
    retry_at: float | None = None
    failures: int = 0
    """Failed retries since it died: the backoff exponent."""
    introducer: str | None = None
    """Who named it, while it is a hint (never reached); None once reached, or if configured."""
    order: int = 0
    """When it was added, in ``add`` calls: its place in ``Membership._members``."""

    def snapshot(self) -> Member:
        return Member(
            self.url, self.node_id, self.state, self.last_contact, self.since, self.source,
            self.retry_at,
        )  # fmt: skip


class Membership:
    """One node's view of its peers, keyed by base URL.

    The Node reports every exchange with ``on_success``/``on_failure``,
    calls ``tick`` and ``due`` once per gossip round, exchanges with the
    URLs ``due`` returns on top of its random fanout (drawn from
    ``gossip_candidates``), and drops the peers ``tick`` removes. URLs are
    taken as given: the caller normalizes them (``transport.urls``) so that
    one peer has one key.
    """

    def __init__(self, config: MembershipConfig | None = None, *, rng: random.Random) -> None:
        if config is None:
            config = MembershipConfig()
        if not isinstance(config, MembershipConfig):
            raise TypeError(f"config must be a MembershipConfig, not {type(config).__name__}")
        if not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, not {type(rng).__name__}")
        self.config = config
        self._rng = rng
        self._members: dict[str, _Entry] = {}
        self._now = -math.inf
        self._news: list[tuple[str, str]] = []
        """``(node_id, url)`` of each member in the order this node first reached it."""
        self._news_base = 0
        """The cursor of ``_news[0]``: compaction drops what came before."""
        self._hints: Counter[str] = Counter()
        """Introducer -> how many of the members it named are hints still."""
        self._by_id: dict[str, dict[str, _Entry]] = {}
        """Node id -> the members (by URL) that an exchange gave that id: ``url_of``'s index."""
        self._added = itertools.count()
        """Numbers the members in the order they are added (``_Entry.order``)."""

    # -- what the Node tells it -------------------------------------------------

    def add(
        self,
        url: str,
        *,
        now: float,
        node_id: str | None = None,
        source: Source,
        introducer: str | None = None,
    ) -> bool:
        """Know a member from now on; True if it is new.

        A new member starts alive, never contacted, and due for a probe at
        once. A known URL keeps its state; a given ``node_id`` replaces the
        one held until an exchange has told this node the real one (a claim
        never overrides what the peer said itself), and a seed stays a seed
        (adding a learned URL as a seed makes it one). Learned members
        (mdns, exchange) are refused once ``max_members`` are known, so that
        peers cannot grow this without bound; seeds and manual members never
        are. A learned member with an ``introducer`` (the peer or host that
        named it) is a *hint* until reached: at most ``max_hints`` of them,
        ``max_hints_per_introducer`` from one introducer, and a hint that
        dies is forgotten at once, so a flood of introductions costs a
        bounded number of dials and keeps no room from real members.
        """
        _check_url(url)
        now = self._clock(now)
        if node_id is not None:
            _check_node_id(node_id)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, not {source!r}")
        entry = self._members.get(url)
        if entry is not None:
            if node_id is not None and entry.last_contact is None:
                entry.node_id = node_id
            if source == "seed":
                entry.source = source
            return False
        if source in LEARNED_SOURCES and len(self._members) >= self.config.max_members:
            return False
        hint = introducer if source in LEARNED_SOURCES else None
        if hint is not None:
            config = self.config
            if self._hints[hint] >= config.max_hints_per_introducer:
                return False
            if self._hints.total() >= config.max_hints:
                return False
            self._hints[hint] += 1
        self._members[url] = _Entry(
            url, node_id, source, MemberState.ALIVE, now, introducer=hint, order=next(self._added)
        )
        return True

    def on_success(self, url: str, node_id: str, now: float) -> Transition | None:
        """An exchange with ``url`` succeeded: it is alive, whatever it was.

        Returns the transition if it was suspect or dead (welcomed back).
        An unknown URL (removed while the exchange ran) is ignored.
        """
        _check_url(url)
        _check_node_id(node_id)
        now = self._clock(now)
        entry = self._members.get(url)
        if entry is None:
            return None
        news = entry.last_contact is None or entry.node_id != node_id
        self._unhint(entry)  # reached: a member now, not a hint
        if news:
            self._unindex(entry)
            entry.node_id = node_id  # a restart with another id is recorded too
            self._by_id.setdefault(node_id, {})[url] = entry
        entry.last_contact = now
        entry.retry_at = None
        entry.failures = 0
        if news:  # reached first-hand, or under a new id
            self._tell(node_id, url)
        return self._move(entry, MemberState.ALIVE, now)

    def on_failure(self, url: str, now: float) -> Transition | None:
        """An exchange with ``url`` failed: alive turns suspect; dead backs off further.

        A suspect member stays suspect: only ``suspect_timeout`` without a
        success makes it dead. Returns the transition, if any.
        """
        _check_url(url)
        now = self._clock(now)
        entry = self._members.get(url)
        if entry is None:
            return None
        if entry.state is MemberState.DEAD:
            entry.failures += 1
            self._schedule_retry(entry, now)
            return None
        if entry.state is MemberState.ALIVE:
            return self._move(entry, MemberState.SUSPECT, now)
        return None

    def tick(self, now: float) -> list[Transition]:
        """Advance the timers: suspects past their timeout die, the long dead go.

        Returns the transitions in URL order; ``new`` is None for a removal.
        """
        now = self._clock(now)
        config = self.config
        changes: list[Transition] = []
        for url in sorted(self._members):
            entry = self._members[url]
            if entry.state is MemberState.SUSPECT:
                if now - entry.since >= config.suspect_timeout and entry.introducer is not None:
                    self._drop(url)  # a hint that never answered: not retried
                    changes.append(Transition(url, entry.node_id, MemberState.SUSPECT, None))
                elif now - entry.since >= config.suspect_timeout:
                    entry.state, entry.since, entry.failures = MemberState.DEAD, now, 0
                    self._schedule_retry(entry, now)
                    changes.append(
                        Transition(url, entry.node_id, MemberState.SUSPECT, MemberState.DEAD)
                    )
            elif (
                entry.state is MemberState.DEAD
                and entry.source != "seed"
                and now - entry.since >= config.remove_after
            ):
                self._drop(url)
                changes.append(Transition(url, entry.node_id, MemberState.DEAD, None))
        return changes

    def settle(self, url: str) -> list[Transition]:
        """Keep one member per node: drop the learned duplicates of ``url``'s node.

        A node can be known at two URLs: a host on two subnets, or one that
        a peer named before mDNS found it here. Once ``url`` is confirmed as
        a node that another confirmed member also is, the one learned less
        directly goes (a peer's word before mDNS, mDNS before configuration);
        of two named by peers, the one reached first stays while alive.
        Configured members (seeds, manual) are never dropped. Returns the
        removals.
        """
        _check_url(url)
        entry = self._members.get(url)
        if entry is None or entry.last_contact is None:
            return []
        dropped: list[_Entry] = []
        for other in self._members.values():
            if other is entry or other.node_id != entry.node_id or other.last_contact is None:
                continue
            if _TRUST[other.source] > _TRUST[entry.source]:
                dropped.append(other)
            elif entry.source == "exchange" and other.state is MemberState.ALIVE:
                dropped = [entry]
                break
        for gone in dropped:
            self._drop(gone.url)
        return [Transition(gone.url, gone.node_id, gone.state, None) for gone in dropped]

    def remove(self, url: str) -> bool:
        """Forget a member now, seed or not; True if it was known."""
        return self._drop(url)

    def hints(self, introducer: str | None = None) -> int:
        """How many hints there are now (all, or those from ``introducer``)."""
        return self._hints.total() if introducer is None else self._hints[introducer]

    # -- what the Node asks -----------------------------------------------------

    def due(self, now: float, *, limit: int | None = None) -> list[str]:
        """The URLs to exchange with now, on top of the gossip fanout.

        Alive members with no success for ``probe_interval`` (new ones at
        once), suspects every ``probe_interval / 2`` (a quick second chance
        before they die), and dead ones whose retry time has come, but no
        member more than once per probe interval. The longest overdue come
        first, at most ``limit`` of them; the rest stay due.
        """
        now = self._clock(now)
        if limit is not None:
            _check_count(limit, "limit")
        ready = sorted(
            (at, url) for url, entry in self._members.items() if (at := self._due_at(entry)) <= now
        )
        chosen = [url for _, url in ready[:limit]]
        for url in chosen:
            self._members[url].probed = now
        return chosen

    def gossip_candidates(self) -> list[str]:
        """Alive and suspect members, for the random fanout (dead ones only get retries)."""
        return [url for url, entry in self._members.items() if entry.state is not MemberState.DEAD]

    def news(self, cursor: int, limit: int) -> tuple[list[tuple[str, str]], int]:
        """Up to ``limit`` (node_id, url) pairs to tell a peer of, and the cursor after them.

        Peer exchange disseminates news, as SWIM piggybacks updates: a member
        is told of once, when this node first reached it (or reached it
        under a new id), so an idle exchange carries no members. The caller
        keeps one cursor per peer, starting at 0 (everything current). Only
        members still alive and reached by this node itself are told of:
        hearsay (a URL a peer claimed, never reached) is not passed on, so a
        bogus address dies out instead of circulating.
        """
        _check_count(cursor, "cursor")
        _check_count(limit, "limit")
        told: list[tuple[str, str]] = []
        index = max(cursor - self._news_base, 0)
        news = self._news
        while index < len(news) and len(told) < limit:
            node_id, url = news[index]
            index += 1
            entry = self._members.get(url)
            if entry is not None and entry.node_id == node_id and entry.state is MemberState.ALIVE:
                told.append((node_id, url))
        return told, self._news_base + index

    def members(self) -> list[Member]:
        """Every member, sorted by URL."""
        return [self._members[url].snapshot() for url in sorted(self._members)]

    def get(self, url: str) -> Member | None:
        """The member at ``url``, or None."""
        entry = self._members.get(url)
        return entry.snapshot() if entry is not None else None

    def peer_id(self, url: str) -> str | None:
        """The node id an exchange with ``url`` returned (a claim does not count), or None."""
        entry = self._members.get(url)
        return entry.node_id if entry is not None and entry.last_contact is not None else None

    def url_of(self, node_id: str) -> str | None:
        """The URL of the member whose exchanges returned ``node_id``, if any.

        Of several (one node at two URLs that ``settle`` keeps, or has not
        seen yet), the first in the order members became known. An index
        kept by ``on_success`` and every removal: O(1) per sync request.
        """
        entries = self._by_id.get(node_id)
        if entries is None:
            return None
        if len(entries) == 1:
            return next(iter(entries))
        return min(entries.values(), key=attrgetter("order")).url

    def __iter__(self) -> Iterator[str]:
        """The members' URLs, in the order they became known."""
        return iter(list(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, url: object) -> bool:
        return url in self._members

    # -- inside -----------------------------------------------------------------

    def _clock(self, now: float) -> float:
        """Check ``now``; time never runs backwards here.

        An earlier ``now`` than one already seen counts as that one: two
        threads may read the clock in one order and reach this in the other.
        """
        self._now = max(self._now, _check_time(now, "now"))
        return self._now

    def _drop(self, url: str) -> bool:
        entry = self._members.pop(url, None)
        if entry is None:
            return False
        self._unhint(entry)
        self._unindex(entry)
        return True

    def _unindex(self, entry: _Entry) -> None:
        """Take ``entry`` out of ``_by_id``, if an exchange gave it its id."""
        if entry.last_contact is None or entry.node_id is None:
            return
        entries = self._by_id[entry.node_id]
        del entries[entry.url]
        if not entries:
            del self._by_id[entry.node_id]

    def _unhint(self, entry: _Entry) -> None:
        introducer, entry.introducer = entry.introducer, None
        if introducer is not None:
            self._hints[introducer] -= 1
            if not self._hints[introducer]:
                del self._hints[introducer]

    def _tell(self, node_id: str, url: str) -> None:
        """Add news; past twice the members, start over from the members reached."""
        news = self._news
        news.append((node_id, url))
        if len(news) > 2 * max(len(self._members), MIN_NEWS):
            self._news_base += len(news)  # every older cursor now reads from the start
            self._news = [
                (entry.node_id, entry.url)
                for entry in self._members.values()
                if entry.node_id is not None and entry.last_contact is not None
            ]

    def _move(self, entry: _Entry, new: MemberState, now: float) -> Transition | None:
        old = entry.state
        if old is new:
            return None
        entry.state = new
        entry.since = now
        return Transition(entry.url, entry.node_id, old, new)

    def _schedule_retry(self, entry: _Entry, now: float) -> None:
        """Full jitter: a delay drawn from [0, window], the window doubling per failure."""
        config = self.config
        exponent = min(entry.failures, _MAX_EXPONENT)
        window = min(config.retry_max, config.retry_initial * 2.0**exponent)
        entry.retry_at = now + self._rng.uniform(0.0, window)

    def _due_at(self, entry: _Entry) -> float:
        """When ``due()`` should next name the member."""
        interval = self.config.probe_interval
        probed = entry.probed
        if entry.state is MemberState.ALIVE:
            heard = max((t for t in (entry.last_contact, probed) if t is not None), default=None)
            return entry.since if heard is None else heard + interval
        if entry.state is MemberState.SUSPECT:
            return entry.since if probed is None else probed + interval / 2
        assert entry.retry_at is not None
        return entry.retry_at if probed is None else max(entry.retry_at, probed + interval)


def _check_time(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    return float(value)


def _check_seconds(value: object, name: str, *, positive: bool) -> None:
    seconds = _check_time(value, name)
    if seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, not {value!r}")


def _check_count(value: object, name: str) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


def _check_url(url: object) -> None:
    if type(url) is not str:
        raise TypeError(f"a member URL is a str, not {type(url).__name__}")
    if not 0 < len(url) <= MAX_URL_CHARS or not url.isprintable() or " " in url:
        raise ValueError(f"member URL {url[:80]!r} is empty, too long or has spaces")


def _check_node_id(node_id: object) -> None:
    if type(node_id) is not str:
        raise TypeError(f"node_id must be a str, not {type(node_id).__name__}")
    if not 0 < len(node_id) <= MAX_REPLICA_ID_CHARS:
        raise ValueError(f"node_id must have 1 to {MAX_REPLICA_ID_CHARS} characters")
