"""The decode fuzz target: any bytes from a wire into ``decode_message``, ``decode`` and an engine.

``python -m fuzz.decode_target --seconds 60`` (``make fuzz``) runs it for a
bounded time: under atheris (coverage-guided libFuzzer) when it is
installed, else under a seeded mutational driver in pure Python over the
same target, since atheris has no wheel for some Pythons and platforms. It
prints which engine ran. An input that makes the target raise anything but
the documented refusals is a bug: it is written to ``fuzz/crashers/decode/``
and kept there for good, and ``tests/test_fuzz_regressions.py`` replays
every file of that directory in the default suite (Automerge keeps every
crash its fuzzer found the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from agentsync import crdt
from agentsync.errors import DecodeError, ProtocolError
from agentsync.sync import SyncEngine, decode_message, encode_message

CRASHERS = Path(__file__).parent / "crashers" / "decode"
"""Every input that ever made the target fail: replayed by the default test suite."""
SEED = 6
"""The pure-Python driver's default seed (``--seed`` picks another; it is printed)."""
CLOCK_BASE_NS = 1_700_000_000 * 10**9


def one_input(data: bytes) -> None:
    """The target: raise only on a bug, never for bad input (DecodeError, ProtocolError).

    A message that decodes goes to a fresh engine as the peer would get it,
    and that engine's answer is encoded: a refusal must come from the
    documented checks, not from somewhere inside the merge.
    """
    try:
        message = decode_message(data)
    except DecodeError:
        message = None
    if message is not None:
        engine = SyncEngine("fuzz-receiver", cluster=message.cluster)
        with contextlib.suppress(DecodeError, ProtocolError):
            if message.is_response:
                engine.on_response(message)
            else:
                encode_message(engine.on_request(message)[0])
    with contextlib.suppress(DecodeError):
        crdt.decode(data)


def seeds() -> list[bytes]:
    """Valid inputs to mutate: every message of a few exchanges, and each type's encoding.

    Deterministic (a counting clock, fixed epochs): two engines write every
    type, exchange deltas, a context, and a snapshot of several pieces.
    """
    clock = itertools.count(CLOCK_BASE_NS, 1000).__next__

    def engine(name: str, epoch: int) -> SyncEngine:
        state = crdt.ORMap(f"{name}.0", clock=clock)
        return SyncEngine(name, state=state, epoch=epoch, max_message_bytes=16384)

    a, b = engine("fuzz-a", 1), engine("fuzz-b", 2)
    out: list[bytes] = []

    def exchange(x: SyncEngine, y: SyncEngine) -> None:
        request = encode_message(x.request(y.node_id if y.node_id in x.peers else None))
        response = encode_message(y.on_request(decode_message(request))[0])
        x.on_response(decode_message(response))
        out.extend((request, response))

    writes: list[tuple[str, type[Any], Callable[[Any], Any]]] = [
        ("hits", crdt.GCounter, lambda c: c.increment(3)),
        ("score", crdt.PNCounter, lambda c: c.decrement(2)),
        ("seen", crdt.GSet, lambda s: s.add("x")),
        ("tags", crdt.ORSet, lambda s: s.add(("t", 1))),
        ("tags", crdt.ORSet, lambda s: s.remove(("t", 1))),
        ("title", crdt.LWWRegister, lambda r: r.set({"k": [1.5, None, b"b"]})),
        ("notes", crdt.MVRegister, lambda r: r.set("n")),
        ("flag", crdt.EWFlag, lambda f: f.enable()),
        ("kv", crdt.LWWMap, lambda m: m.set("k", 1)),
        ("kv", crdt.LWWMap, lambda m: m.remove("k")),
        ("docs", crdt.ORMap, lambda m: m.update("c", crdt.PNCounter, lambda c: c.increment())),
    ]
    exchange(a, b)
    for name, kind, fn in writes:
        delta = a.state.update(name, kind, fn)
        out.append(crdt.encode(delta))  # before the engine takes it over
        a.record_local(delta)
    exchange(a, b)
    exchange(b, a)
    for k in range(1500):  # a snapshot of several pieces for a newcomer
        b.record_local(b.state.update("big", crdt.ORSet, lambda s, k=k: s.add(f"item-{k:05d}")))
    c = engine("fuzz-c", 3)
    for _ in range(6):
        exchange(c, b)
    out.append(crdt.encode(b.state))
    return out


# -- the pure-Python driver -----------------------------------------------------------------

_INTERESTING: list[Any] = [
    None, True, 0, 1, -1, 255, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5,
    float("nan"), float("inf"), "", "x" * 300, b"", b"\x00" * 64, [], [[]], {}, {"k": 1},
]  # fmt: skip


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four random edits: bytes flipped, inserted, deleted, cut or spliced,
    or (for a msgpack array) one item replaced by an interesting value."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(7)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2:
            del out[at : at + rng.randint(1, 16)]
        elif kind == 3:
            del out[at:]
        elif kind == 4:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            out[at:] = other[start : start + rng.randint(1, 64)]
        elif kind == 5 and out:
            out[min(at, len(out) - 1)] = rng.choice((0x00, 0x7F, 0x80, 0xC0, 0xCF, 0xDC, 0xFF))
        else:
            out = bytearray(_substituted(rng, bytes(out)))
    return bytes(out)


def _substituted(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one item of its top-level msgpack array replaced, if it is one."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # any bytes at all: not an array to edit
        return data
    if not isinstance(raw, list) or not raw:
        return data
    raw[rng.randrange(len(raw))] = rng.choice(_INTERESTING)
    try:
        return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]
    except (OverflowError, ValueError, TypeError):
        return data


def run_python(seconds: float, seed: int) -> int:
    """Mutate the seeds for ``seconds``; write each crashing input; return how many."""
    rng = random.Random(seed)
    pool = seeds()
    corpus = [*pool, *(path.read_bytes() for path in sorted(CRASHERS.glob("*")))]
    end = time.monotonic() + seconds
    runs = crashes = 0
    while time.monotonic() < end:
        data = mutate(rng, rng.choice(corpus), pool)
        runs += 1
        try:
            one_input(data)
        except Exception as exc:
            crashes += 1
            path = _keep(data)
            print(f"CRASH {type(exc).__name__}: {exc} -> {path}", file=sys.stderr)
    print(f"pure-Python driver: {runs} runs in {seconds:g} s, seed {seed}, {crashes} crashes")
    return crashes


def _keep(data: bytes) -> Path:
    CRASHERS.mkdir(parents=True, exist_ok=True)
    path = CRASHERS / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def run_atheris(seconds: float) -> None:  # pragma: no cover  # needs atheris
    """libFuzzer for ``seconds``: crashes into ``CRASHERS``.

    Its corpus lives on between runs in the temp directory (libFuzzer exits
    the process, so nothing cleans up after it): each run starts from the
    coverage the last one reached, plus the seeds and the crashers.
    """
    import atheris

    work = Path(tempfile.gettempdir()) / "agentsync-fuzz-decode"
    work.mkdir(exist_ok=True)
    for data in seeds():
        (work / hashlib.sha1(data).hexdigest()).write_bytes(data)
    for path in CRASHERS.glob("*"):
        (work / path.name).write_bytes(path.read_bytes())
    CRASHERS.mkdir(parents=True, exist_ok=True)
    atheris.instrument_all()  # agentsync is imported already: coverage of all of it
    argv = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-artifact_prefix={CRASHERS}/"]
    atheris.Setup([*argv, str(work)], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=SEED, help="the pure-Python driver's seed")
    parser.add_argument("--engine", choices=("auto", "atheris", "python"), default="auto")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "python"
            print("atheris is not installed: the pure-Python mutational driver runs")
        else:
            engine = "atheris"
    if engine == "atheris":  # pragma: no cover  # needs atheris
        print(f"engine: atheris (libFuzzer), {args.seconds:g} s")
        run_atheris(args.seconds)
        return 0
    print(f"engine: pure-Python mutational driver, {args.seconds:g} s, seed {args.seed}")
    return 1 if run_python(args.seconds, args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
