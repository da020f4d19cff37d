"""The keyring: derivation per secret and cluster, the checks on a secret, and rotation."""

from __future__ import annotations

import threading

import pytest

from agentsync.security import Keyring, check_secret, derive
from agentsync.security.keyring import FINGERPRINT_CHARS, KEY_ID_BYTES

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_derivation_is_deterministic_and_every_part_differs() -> None:
    key = derive(SECRET, "blue")
    again = derive(SECRET, "blue")
    assert (key.key_id, key.token, key.fingerprint) == (
        again.key_id,
        again.token,
        again.fingerprint,
    )
    assert len(key.key_id) == KEY_ID_BYTES
    assert len(key.fingerprint) == FINGERPRINT_CHARS
    assert int(key.fingerprint, 16) >= 0
    assert key.key_id.hex()[:FINGERPRINT_CHARS] != key.fingerprint
    assert SECRET.hex() not in (key.token, key.fingerprint, key.name)


@pytest.mark.parametrize(("secret", "cluster"), [(OTHER, "blue"), (SECRET, "red")])
def test_another_secret_or_cluster_gives_unrelated_keys(secret: bytes, cluster: str) -> None:
    key, other = derive(SECRET, "blue"), derive(secret, cluster)
    assert key.key_id != other.key_id
    assert key.token != other.token
    assert key.fingerprint != other.fingerprint


def test_a_passphrase_is_stretched_per_cluster() -> None:
    key = derive("correct horse battery", "blue")
    assert key.key_id == derive("correct horse battery", "blue").key_id
    assert key.key_id != derive("correct horse battery", "red").key_id
    assert key.key_id != derive(b"correct horse battery", "blue").key_id  # bytes: no Scrypt


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        (None, TypeError),
        (12345678, TypeError),
        (["a"], TypeError),
        (b"", ValueError),
        (b"x" * 15, ValueError),
        (b"x" * 1025, ValueError),
        ("", ValueError),
        ("short", ValueError),
        ("é" * 600, ValueError),  # 1,200 bytes in UTF-8
    ],
)
def test_bad_secrets_are_refused_with_a_clear_error(secret: object, error: type) -> None:
    with pytest.raises(error, match="secret"):
        check_secret(secret)


def test_good_secrets_pass() -> None:
    assert check_secret(b"x" * 16) == b"x" * 16
    assert check_secret(bytearray(b"y" * 32)) == b"y" * 32
    assert check_secret("eight ch") == "eight ch"


def test_a_keyring_needs_a_cluster() -> None:
    with pytest.raises(ValueError, match="cluster"):
        Keyring(SECRET, cluster="")


def test_rotation_in_three_steps() -> None:
    ring = Keyring(SECRET, cluster="blue")
    old, new = derive(SECRET, "blue"), derive(OTHER, "blue")
    assert ring.key_ids == [old.name]
    assert ring.install(OTHER) == new.name
    assert ring.install(OTHER) == new.name  # idempotent
    assert ring.primary.key_id == old.key_id  # installing does not change what seals
    assert ring.get(new.key_id) is not None
    assert ring.fingerprints == {old.fingerprint, new.fingerprint}
    assert ring.accepts_token(old.token)
    assert ring.accepts_token(new.token)
    ring.use(OTHER)
    assert ring.primary.key_id == new.key_id
    assert ring.key_ids == [new.name, old.name]
    assert ring.remove(SECRET) is True
    assert ring.remove(SECRET) is False
    assert ring.key_ids == [new.name]
    assert ring.get(old.key_id) is None
    assert not ring.accepts_token(old.token)
    assert ring.fingerprints == {new.fingerprint}


def test_use_needs_an_installed_key_and_the_primary_cannot_be_removed() -> None:
    ring = Keyring(SECRET, cluster="blue")
    with pytest.raises(ValueError, match="install it first"):
        ring.use(OTHER)
    with pytest.raises(ValueError, match="primary"):
        ring.remove(SECRET)
    assert ring.key_ids == [derive(SECRET, "blue").name]


@pytest.mark.parametrize("token", ["", "x", "not the token", "\udcff", derive(OTHER, "blue").token])
def test_wrong_tokens_are_refused(token: str) -> None:
    assert not Keyring(SECRET, cluster="blue").accepts_token(token)


def test_changes_from_threads_leave_a_consistent_keyring() -> None:
    ring = Keyring(SECRET, cluster="blue")
    secrets = [bytes([i]) * 16 for i in range(1, 9)]

    def churn(secret: bytes) -> None:
        for _ in range(20):
            ring.install(secret)
            ring.use(secret)
            ring.use(SECRET)
            ring.remove(secret)

    threads = [threading.Thread(target=churn, args=(s,)) for s in secrets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ring.key_ids == [derive(SECRET, "blue").name]
