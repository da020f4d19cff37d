"""BP and RR: the shape of the ICDE 2019 results, on the paper's GSet setup.

The run is ``bench/icde19.py``'s simulation cut to 10 s of updates (the
paper's is 100 s): 15 nodes on tree15 and mesh15, 1 update and 1 sync per
neighbour per second per node. The paper's factors grow with the run's
length (classic delta is 81x / 57x BP+RR at 100 s), so the bounds below are
the shape, calibrated to what 10 s gives, not the paper's figures: classic
delta 7.2x / 4.4x BP+RR's total and 3.9x / 2.8x its bytes. (They were 13x /
15x and 6.1x / 6.8x while the engine sent an interval as one framed delta per
buffered entry: without RR an element then travelled once per entry holding
it, where the paper's interval is one join, and so is the engine's now.)
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agentsync.crdt import GSet
from agentsync.sync import SyncEngine, decode_message, encode_message

SECONDS = 10
SEED = 1
BENCH = Path(__file__).resolve().parents[2] / "bench" / "icde19.py"


def load_bench() -> ModuleType:
    module = sys.modules.get("icde19")
    if module is None:
        spec = importlib.util.spec_from_file_location("icde19", BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["icde19"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


@functools.cache
def gset(topology: str) -> dict[str, Any]:
    icde19 = load_bench()
    tallies = {}
    for algorithm in ("state", "classic", "bprr", "ours"):  # not the prototype
        plan = icde19.schedule("gset", topology, SEED, SECONDS, 15)
        tally, _ = icde19.simulate("gset", topology, algorithm, plan, seconds=SECONDS, tail=5)
        tallies[algorithm] = tally
    return tallies


OPTIMAL_PAYLOAD = 15 * SECONDS * 14
"""Every update reaching the 14 other nodes once."""


@pytest.mark.parametrize(
    ("topology", "factor", "bytes_factor"), [("tree15", 6, 3), ("mesh15", 4, 2.5)]
)
def test_classic_delta_sends_many_times_what_bp_rr_sends(
    topology: str, factor: int, bytes_factor: float
) -> None:
    t = gset(topology)
    ratio = t["classic"].total / t["bprr"].total
    assert ratio >= factor, f"seed={SEED}: classic/bprr = {ratio:.2f} on {topology}"
    assert t["classic"].bytes >= bytes_factor * t["bprr"].bytes, f"seed={SEED}: {t}"


@pytest.mark.parametrize("topology", ["tree15", "mesh15"])
def test_state_based_sends_many_times_what_bp_rr_sends(topology: str) -> None:
    t = gset(topology)
    assert t["state"].total >= 5 * t["bprr"].total, f"seed={SEED}: {t}"


def test_bp_rr_sends_each_update_once_on_the_tree() -> None:
    """On a tree BP+RR is optimal (the paper): every element crosses each edge once."""
    payload = gset("tree15")["bprr"].payload
    assert OPTIMAL_PAYLOAD <= payload <= 1.05 * OPTIMAL_PAYLOAD, f"seed={SEED}: {payload}"


def test_bp_rr_sends_about_three_times_the_optimum_on_the_mesh() -> None:
    """The paper: 3.3x optimal, because one delta reaches a node from several neighbours."""
    payload = gset("mesh15")["bprr"].payload
    assert 2.5 * OPTIMAL_PAYLOAD <= payload <= 4 * OPTIMAL_PAYLOAD, f"seed={SEED}: {payload}"


@pytest.mark.parametrize("topology", ["tree15", "mesh15"])
def test_the_push_pull_exchange_sends_the_payload_bp_rr_sends(topology: str) -> None:
    """Regression: response intervals were sent again (ours was 1.5x / 1.4x BP+RR)."""
    t = gset(topology)
    ratio = t["ours"].payload / t["bprr"].payload
    assert ratio <= 1.05, f"seed={SEED}: ours/bprr payload = {ratio:.3f} on {topology}"


@pytest.mark.parametrize("topology", ["tree15", "mesh15"])
def test_the_push_pull_exchange_costs_at_most_10_percent_over_bp_rr(topology: str) -> None:
    """Total, idle exchanges included: push-only sends nothing when it has nothing.

    The idle cost is a larger share of a 10 s run than of the paper's 100 s,
    where the bar is 5% (bench/icde19.py measures that).
    """
    t = gset(topology)
    ratio = t["ours"].total / t["bprr"].total
    assert ratio <= 1.10, f"seed={SEED}: ours/bprr = {ratio:.3f} on {topology}"


def test_an_interval_delivered_in_a_response_is_not_sent_again() -> None:
    a = SyncEngine("a", epoch=1)
    b = SyncEngine("b", epoch=2)
    for _ in range(2):  # both know each other and hold acks
        b.on_response(decode_message(encode_message(a.on_request(b.request("a"))[0])))
    a.record_local(a.state.update("s", GSet, lambda s: s.add("x")))
    response, _ = a.on_request(decode_message(encode_message(b.request("a"))))
    assert [d.value for d in response.deltas] == [{"s": frozenset({"x"})}]
    b.on_response(decode_message(encode_message(response)))  # delivered: b holds x
    assert a.request("b").deltas == (), "a sends x to b a second time"


def test_the_push_pull_exchange_sends_less_than_bp_rr_on_the_mesh() -> None:
    """One delta often reaches both ends of a mesh edge; a response cut by its request omits it.

    BP+RR sends such a delta across the edge both ways. (At 10 s: ours is
    0.65x BP+RR's payload, 0.72x its total and 0.91x its bytes.)
    """
    t = gset("mesh15")
    ours, bprr = t["ours"], t["bprr"]
    assert ours.payload <= 0.8 * bprr.payload, f"seed={SEED}: {ours} against {bprr}"
    assert ours.total <= 0.85 * bprr.total, f"seed={SEED}: {ours} against {bprr}"
    assert ours.bytes < bprr.bytes, f"seed={SEED}: {ours} against {bprr}"
