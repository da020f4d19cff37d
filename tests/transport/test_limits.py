"""The admission rules alone (per-address and total caps) and the handler's fair turns."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from agentsync.transport.limits import FairQueue, Gate, Limits, Refusal, Turns, remote_key


def test_an_address_over_its_cap_gets_429_and_others_still_get_in() -> None:
    gate = Gate(Limits(requests_per_remote=2))
    assert gate.begin("10.0.0.1") is None
    assert gate.begin("10.0.0.1") is None
    refusal = gate.begin("10.0.0.1")
    assert refusal == Refusal(429, "too many requests in flight from this address (at most 2)")
    assert gate.begin("10.0.0.2") is None
    assert (gate.requests("10.0.0.1"), gate.requests("10.0.0.2"), gate.in_flight) == (2, 1, 3)
    gate.end("10.0.0.1")
    assert gate.begin("10.0.0.1") is None, "a finished request frees its slot"


def test_a_full_server_gets_503_whoever_asks() -> None:
    gate = Gate(Limits(connections=3, connections_per_remote=2))
    assert [gate.connect(ip) for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2")] == [None] * 3
    refusal = gate.connect("10.0.0.3")
    assert refusal is not None and refusal.status == 503
    assert refusal.reason == "too many connections (at most 3); try again later"
    over = gate.connect("10.0.0.1")
    assert over is not None and over.status == 429, "the address's own cap is named first"
    gate.disconnect("10.0.0.2")
    assert gate.connect("10.0.0.3") is None
    assert gate.open_connections == 3


def test_refusals_count_nothing_and_idle_addresses_are_forgotten() -> None:
    gate = Gate(Limits(connections_per_remote=1, requests_per_remote=1))
    for n in range(1000):
        ip = f"10.0.{n // 256}.{n % 256}"
        assert gate.connect(ip) is None and gate.begin(ip) is None
        assert gate.connect(ip) is not None and gate.begin(ip) is not None
        gate.end(ip)
        gate.disconnect(ip)
    assert (gate.open_connections, gate.in_flight) == (0, 0)
    assert not gate._connections.held and not gate._requests.held, "memory: only what is held"


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.168.1.7", "192.168.1.7"),
        ("::ffff:192.168.1.7", "192.168.1.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, ""),
        ("/run/agentsync.sock", ""),
    ],
)
def test_remotes_are_counted_per_ipv4_address_and_per_ipv6_64(host: str | None, key: str) -> None:
    assert remote_key(host) == key


@pytest.mark.parametrize(
    "options",
    [{"connections": 0}, {"requests_per_remote": -1}, {"requests": 1.5}, {"retry_after": -1}],
)
def test_bad_limits_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        Limits(**options)  # type: ignore[arg-type]


def test_the_fair_queue_takes_one_item_per_address_in_turn() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ("flood-1", "flood-2", "flood-3"):
        queue.put("10.0.0.9", item)
    queue.put("10.0.0.1", "honest")
    queue.put("10.0.0.9", "flood-4")
    assert len(queue) == 5
    taken = [queue.take() for _ in range(6)]
    assert taken == ["flood-1", "honest", "flood-2", "flood-3", "flood-4", None]


def test_turns_run_calls_in_round_robin_and_hand_back_results_and_errors() -> None:
    ran: list[str] = []

    def call(name: str) -> str:
        ran.append(name)
        if name == "bad":
            raise ValueError("refused")
        return name.upper()

    async def main() -> list[object]:
        turns = Turns()
        jobs = [("flood", f"f{n}") for n in range(3)] + [("honest", "h"), ("other", "bad")]
        return await asyncio.gather(
            *(turns.run(remote, functools.partial(call, name)) for remote, name in jobs),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert ran == ["f0", "h", "bad", "f1", "f2"], "the honest call waits for one flood call"
    assert results[:4] == ["F0", "F1", "F2", "H"]
    assert isinstance(results[4], ValueError)


def test_a_backlog_of_slow_calls_leaves_the_loop_half_its_time() -> None:
    """Between two slow calls with more queued, other tasks run for about as long."""

    async def main() -> tuple[int, int]:
        turns = Turns()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        def slow() -> int:
            time.sleep(0.02)
            return ticks

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        seen = await asyncio.gather(*(turns.run("flood", slow) for _ in range(3)))
        ticking.cancel()
        return seen[1] - seen[0], seen[2] - seen[1]

    for gap in asyncio.run(main()):
        assert gap > 10, "the loop ran other work during the pause"


def test_closing_turns_cancels_the_calls_still_waiting() -> None:
    ran: list[int] = []

    def call() -> None:
        ran.append(1)
        time.sleep(0.01)

    async def main() -> list[bool]:
        turns = Turns()
        waiting = [asyncio.create_task(turns.run("a", call)) for _ in range(3)]
        while not ran:  # the first call runs, then its pause begins
            await asyncio.sleep(0)
        await turns.close()
        await asyncio.gather(*waiting, return_exceptions=True)
        return [task.cancelled() for task in waiting]

    assert asyncio.run(main()) == [False, True, True]
    assert ran == [1]
