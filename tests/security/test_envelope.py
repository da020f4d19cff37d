"""Envelopes: a round trip opens, and any change, another key or another cluster does not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentsync.errors import AuthenticationError
from agentsync.security import Channel, Keyring, ReplayGuard, open_envelope, seal
from agentsync.security.envelope import HEADER_MIN_BYTES, REQUEST, RESPONSE, TAG_BYTES, read_header

SECRET = b"k" * 32
RING = Keyring(SECRET, cluster="blue")
KEY = RING.primary
U64 = st.integers(0, (1 << 64) - 1)
SENDERS = st.text(min_size=1, max_size=60)


def sealed(body: bytes = b"body", kind: int = REQUEST, bound: bytes = b"") -> bytes:
    return seal(KEY, body, kind=kind, sender="n1", epoch=7, seq=1, timestamp_ms=1000, bound=bound)[
        0
    ]


@given(body=st.binary(max_size=4096), sender=SENDERS, epoch=U64, seq=U64, ts=U64)
def test_round_trip(body: bytes, sender: str, epoch: int, seq: int, ts: int) -> None:
    data, raw = seal(KEY, body, kind=REQUEST, sender=sender, epoch=epoch, seq=seq, timestamp_ms=ts)
    header, opened = open_envelope(RING, data, kind=REQUEST)
    assert opened == body
    assert (header.sender, header.epoch, header.seq, header.timestamp_ms) == (
        sender,
        epoch,
        seq,
        ts,
    )
    assert header.key_id == KEY.key_id
    assert header.raw == raw
    assert len(data) == len(raw) + len(body) + TAG_BYTES
    if len(body) >= 8:
        assert body not in data  # encrypted


@given(data=st.data(), body=st.binary(max_size=512))
def test_any_flipped_byte_is_refused(data: st.DataObject, body: bytes) -> None:
    envelope = bytearray(sealed(body))
    at = data.draw(st.integers(0, len(envelope) - 1))
    envelope[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(AuthenticationError):
        open_envelope(RING, bytes(envelope), kind=REQUEST)


@given(cut=st.integers(0, 165))
def test_a_truncated_or_extended_envelope_is_refused(cut: int) -> None:
    envelope = sealed(b"x" * 100)
    assert len(envelope) == 166
    with pytest.raises(AuthenticationError):
        open_envelope(RING, envelope[:cut], kind=REQUEST)
    with pytest.raises(AuthenticationError):
        open_envelope(RING, envelope + b"\x00" * (cut + 1), kind=REQUEST)


@given(junk=st.binary(max_size=300))
def test_random_bytes_are_refused_with_the_one_error(junk: bytes) -> None:
    with pytest.raises(AuthenticationError):
        open_envelope(RING, junk, kind=REQUEST)


@pytest.mark.parametrize(
    ("secret", "cluster"), [(b"w" * 32, "blue"), (SECRET, "red"), (SECRET, "Blue")]
)
def test_another_key_or_another_cluster_is_refused(secret: bytes, cluster: str) -> None:
    other = Keyring(secret, cluster=cluster)
    with pytest.raises(AuthenticationError, match="not installed"):
        open_envelope(other, sealed(), kind=REQUEST)


def test_a_forged_key_id_does_not_help() -> None:
    """An envelope sealed with another key under our key id fails the tag."""
    wrong = Keyring(b"w" * 32, cluster="blue").primary
    envelope = bytearray(seal(wrong, b"hi", kind=REQUEST, sender="x", epoch=1, seq=1,
                              timestamp_ms=1)[0])  # fmt: skip
    envelope[2:10] = KEY.key_id
    with pytest.raises(AuthenticationError, match="failed authentication"):
        open_envelope(RING, bytes(envelope), kind=REQUEST)


def test_a_response_is_bound_to_its_request_and_to_its_kind() -> None:
    request = sealed()
    raw = read_header(request).raw
    response = sealed(b"reply", kind=RESPONSE, bound=raw)
    assert open_envelope(RING, response, kind=RESPONSE, bound=raw)[1] == b"reply"
    other = read_header(seal(KEY, b"", kind=REQUEST, sender="n1", epoch=7, seq=2,
                             timestamp_ms=1000)[0]).raw  # fmt: skip
    with pytest.raises(AuthenticationError, match="failed authentication"):
        open_envelope(RING, response, kind=RESPONSE, bound=other)
    with pytest.raises(AuthenticationError, match="where a request belongs"):
        open_envelope(RING, response, kind=REQUEST)
    with pytest.raises(AuthenticationError, match="where a response belongs"):
        open_envelope(RING, request, kind=RESPONSE, bound=raw)


def test_header_fields_are_checked_before_the_tag() -> None:
    envelope = bytearray(sealed())
    envelope[0] = 9
    with pytest.raises(AuthenticationError, match="version 9"):
        read_header(bytes(envelope))
    assert len(sealed(b"")) >= HEADER_MIN_BYTES + TAG_BYTES


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": 3}, {"sender": ""}, {"sender": "x" * 1025}, {"seq": -1}, {"epoch": 1 << 64}],
)
def test_seal_refuses_what_open_would(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"kind": REQUEST, "sender": "n", "epoch": 1, "seq": 1,
                               "timestamp_ms": 1, **kwargs}  # fmt: skip
    with pytest.raises(ValueError):
        seal(KEY, b"", **args)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_channel_pair_exchanges_and_refuses_a_replay() -> None:
    clock = Clock()
    a = Channel(Keyring(SECRET, cluster="blue"), "a", clock=clock)
    b = Channel(Keyring(SECRET, cluster="blue"), "b", clock=clock)
    request, header = a.seal_request(b"ping")
    body, seen = b.open_request(request)
    assert (body, seen.raw, seen.sender) == (b"ping", header, "a")
    response = b.seal_response(b"pong", seen.raw)
    body, opened = a.open_response(response, header)
    assert (body, opened.sender) == (b"pong", "b")
    with pytest.raises(AuthenticationError, match="replayed"):
        b.open_request(request)
    with pytest.raises(AuthenticationError, match="replayed"):
        a.open_response(response, header)
    assert a.epoch != b.epoch


def test_a_request_queued_behind_many_replies_of_its_sender_is_still_taken() -> None:
    """Requests and replies of one peer share its seqs but not a replay window."""
    clock = Clock()
    a = Channel(Keyring(SECRET, cluster="blue"), "a", clock=clock)
    b = Channel(Keyring(SECRET, cluster="blue"), "b", clock=clock)
    queued = a.seal_request(b"sent first, opened last")[0]
    for _ in range(2000):  # a answers b's requests meanwhile: 2,000 newer seqs of a
        request, header = b.seal_request(b"q")
        _, seen = a.open_request(request)
        b.open_response(a.seal_response(b"r", seen.raw), header)
    assert b.open_request(queued)[0] == b"sent first, opened last"


def test_a_channel_seals_with_the_primary_key_after_a_rotation() -> None:
    clock = Clock()
    ring = Keyring(SECRET, cluster="blue")
    a = Channel(ring, "a", clock=clock)
    b = Channel(Keyring(SECRET, cluster="blue"), "b", clock=clock, replay=ReplayGuard(clock=clock))
    ring.install(b"n" * 32)
    ring.use(b"n" * 32)
    with pytest.raises(AuthenticationError, match="not installed"):
        b.open_request(a.seal_request(b"x")[0])
    b.keyring.install(b"n" * 32)
    assert b.open_request(a.seal_request(b"x")[0])[0] == b"x"
