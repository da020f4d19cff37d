"""Edge sensors: readings aggregated through a network partition, converged on reconnect.

Run: python examples/edge_sensors.py

Two sites, each a gateway and two sensor agents, every one its own Node (here
in one process, on loopback). Sensors gossip with their site's gateway, and
the gateways with each other over an uplink. They share three names:
``samples``, a counter of every reading taken; ``alerts``, a map of one
counter per site, counting hot readings; and ``latest``, an LWWMap of each
sensor's last reading.

The uplink fails for real: each gateway drops the other (``remove_peer``), so
no exchange crosses it. Both sites keep measuring and agree within the site
while the sites disagree. When the uplink returns (``add_peer``), gossip
carries what each side missed, the concurrent increments add up, and every
node holds the same state. It prints the timeline.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from agentsync import Node

SITES = {"site-a": ("north", "south"), "site-b": ("east", "west")}
READINGS = 5  # per sensor and phase
HOT_C = 24.0  # a reading above this raises an alert
GOSSIP = 0.05
DEADLINE_S = 10.0
START = time.monotonic()


def say(phase: str, what: str) -> None:
    print(f"{time.monotonic() - START:5.2f}s  {phase:<10} {what}", flush=True)


def view(node: Node) -> str:
    """One node's aggregates, as the timeline shows them."""
    alerts = node.map("alerts").value
    samples = node.counter("samples").value
    return f"samples={samples:<3} alerts a={alerts.get('site-a', 0)} b={alerts.get('site-b', 0)}"


async def measure(node: Node, site: str, rng: random.Random) -> None:
    """Take ``READINGS`` readings: each one counted, alerted on, and kept as the latest."""
    for _ in range(READINGS):
        celsius = round(rng.gauss(22.0, 2.0), 1)
        with node.batch():  # the three writes travel as one delta
            node.counter("samples").increment()
            if celsius > HOT_C:
                node.map("alerts").counter(site).increment()
            node.lwwmap("latest")[node.node_id] = celsius
        await asyncio.sleep(0.01)


async def settle(*groups: list[Node]) -> None:
    """Wait until the nodes of each group hold the same state, by gossip alone."""
    deadline = time.monotonic() + DEADLINE_S
    while any(node.value != group[0].value for group in groups for node in group):
        if time.monotonic() > deadline:
            raise TimeoutError("the nodes did not converge")
        await asyncio.sleep(GOSSIP / 2)


def uplink(a: Node, b: Node, *, up: bool) -> None:
    """Bring the link between two gateways up or down, on both ends."""
    for here, there in ((a, b), (b, a)):
        if up:
            here.add_peer(there.url)
        else:
            here.remove_peer(there.url)


async def main() -> int:
    site_of = {sensor: site for site, sensors in SITES.items() for sensor in sensors}
    rngs = {sensor: random.Random(sensor) for sensor in site_of}  # the same run every time
    gateways: list[Node] = []
    sites: list[list[Node]] = []
    everyone: list[Node] = []  # every node started, in order
    try:
        for site, names in SITES.items():
            # The sensors and gw-b are given peers=, so they keep that topology (gossip
            # teaches them no other node); gw-a, started with none, learns who reaches it.
            gateway = Node(
                f"gw-{site[-1]}", peers=[g.url for g in gateways], gossip_interval=GOSSIP
            )
            await gateway.start()
            everyone.append(gateway)
            gateways.append(gateway)
            sites.append([gateway])
            for name in names:
                sensor = Node(name, peers=[gateway.url], gossip_interval=GOSSIP)
                await sensor.start()
                everyone.append(sensor)
                sites[-1].append(sensor)
        sensors = [node for node in everyone if node.node_id in site_of]

        async def measure_all() -> None:  # every sensor at once: the writes are concurrent
            await asyncio.gather(
                *(measure(s, site_of[s.node_id], rngs[s.node_id]) for s in sensors)
            )

        say("online", f"gateways {gateways[0].node_id}, {gateways[1].node_id}; sensors "
            + ", ".join(f"{name} ({site})" for name, site in site_of.items()))  # fmt: skip
        await measure_all()
        await settle(everyone)
        say("together", f"every node: {view(everyone[0])}")

        uplink(*gateways, up=False)
        say("partition", "the uplink between the gateways is down")
        await asyncio.sleep(4 * GOSSIP)  # exchanges already on the wire land first
        await measure_all()
        await settle(*sites)
        assert sites[0][0].value != sites[1][0].value, "the sites disagree while apart"
        for node in everyone:
            say("apart", f"{node.node_id:<6} {view(node)}")

        began = time.monotonic()
        uplink(*gateways, up=True)
        say("reconnect", "the uplink is back")
        await settle(everyone)
        say("converged", f"in {time.monotonic() - began:.2f} s, every node: {view(everyone[0])}")
    finally:
        for node in everyone:
            await node.stop()

    state = everyone[0].value
    total = 2 * READINGS * len(site_of)
    latest = ", ".join(f"{name} {state['latest'][name]}" for name in site_of)
    say("check", f"{state['samples']} samples of {total} readings; latest: {latest}")
    return 0 if state["samples"] == total else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
