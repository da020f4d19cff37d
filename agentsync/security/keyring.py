"""The keys of a cluster, derived from its shared secret, and their rotation.

A secret is bytes (at least 16, ideally 32 random ones) or a str
passphrase, which is stretched with Scrypt first so that guessing it from
a captured message costs a memory-hard derivation per guess. Every key is
then derived with HKDF-SHA256 with the cluster name in its context: two
clusters that share a secret get unrelated keys and cannot talk.

One secret gives four values, each from its own HKDF context: the key id
that envelopes name, the AEAD key, the bearer token of the HTTP reads and
the fingerprint that mDNS announces. The id and the fingerprint are public;
neither reveals the key.

A ``Keyring`` holds one primary key, which seals, and every installed key,
each of which opens. Rotation is three steps on every node, as in
memberlist: ``install`` the new key, then ``use`` it, then ``remove`` the old
one, each step done everywhere before the next begins.
"""

from __future__ import annotations

import base64
import hmac
import threading
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SECRET_MIN_BYTES = 16
"""The shortest bytes secret: 128 bits."""
MAX_SECRET_BYTES = 1024
"""The longest secret, bytes or the UTF-8 of a passphrase."""
PASSPHRASE_MIN_CHARS = 8
"""The shortest passphrase (Scrypt slows guessing; it cannot make a short one strong)."""
KEY_ID_BYTES = 8
FINGERPRINT_CHARS = 12
"""Hex digits of the mDNS fingerprint: enough to tell keys apart, too few to matter."""
SCRYPT_N = 1 << 15
"""Scrypt's cost: 32 MiB and about 0.1 s per passphrase, paid once per key."""
SCRYPT_R = 8
SCRYPT_P = 1
_LABEL = b"agentsync/1 "

Secret = bytes | str


def check_secret(secret: object) -> bytes | str:
    """``secret`` if it is a usable secret; TypeError or ValueError saying why not."""
    if isinstance(secret, str):
        if len(secret) < PASSPHRASE_MIN_CHARS or len(secret.encode()) > MAX_SECRET_BYTES:
            raise ValueError(
                f"a passphrase secret must have {PASSPHRASE_MIN_CHARS} characters or more "
                f"and at most {MAX_SECRET_BYTES} bytes in UTF-8"
            )
        return secret
    if isinstance(secret, (bytes, bytearray)):
        if not SECRET_MIN_BYTES <= len(secret) <= MAX_SECRET_BYTES:
            raise ValueError(
                f"a bytes secret must have {SECRET_MIN_BYTES} to {MAX_SECRET_BYTES} bytes, "
                f"not {len(secret)} (32 random bytes are best)"
            )
        return bytes(secret)
    raise TypeError(f"a secret must be bytes or a str passphrase, not {type(secret).__name__}")


@dataclass(frozen=True, slots=True)
class Key:
    """One derived key: what seals and opens, and the public names of it."""

    key_id: bytes
    aead: AESGCM = field(repr=False)
    token: str = field(repr=False)
    """The bearer token of ``GET /v1/state`` and ``/metrics``."""
    fingerprint: str
    """Announced over mDNS so that peers with another key are skipped."""

    @property
    def name(self) -> str:
        """The key id as hex, as logs and ``Keyring.key_ids`` show it."""
        return self.key_id.hex()


def derive(secret: Secret, cluster: str) -> Key:
    """The key of ``secret`` in ``cluster`` (Scrypt first for a passphrase)."""
    checked = check_secret(secret)
    context = cluster.encode()
    if isinstance(checked, str):
        salt = _LABEL + b"passphrase " + context
        master = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
            checked.encode()
        )
    else:
        master = checked

    def part(purpose: bytes, length: int) -> bytes:
        info = _LABEL + purpose + b"\x00" + context  # the purposes hold no NUL: unambiguous
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)

    return Key(
        key_id=part(b"key id", KEY_ID_BYTES),
        aead=AESGCM(part(b"aead aes-256-gcm", 32)),
        token=base64.urlsafe_b64encode(part(b"bearer", 32)).rstrip(b"=").decode("ascii"),
        fingerprint=part(b"fingerprint", FINGERPRINT_CHARS // 2).hex(),
    )


def check_cluster(cluster: object) -> str:
    if type(cluster) is not str or not cluster:
        raise ValueError("a keyring's cluster must be a non-empty str")
    return cluster


class Keyring:
    """The installed keys of one node; the primary one seals, any installed one opens.

    Safe to change from any thread while the node runs: every change
    replaces one immutable snapshot, so a reader sees the keys before or
    after it, never half of it.
    """

    def __init__(self, secret: Secret, *, cluster: str) -> None:
        self.cluster = check_cluster(cluster)
        key = derive(secret, cluster)
        self._snapshot: tuple[Key, dict[bytes, Key]] = (key, {key.key_id: key})
        self._changing = threading.Lock()

    @property
    def primary(self) -> Key:
        """The key that seals every message and whose token the client sends."""
        return self._snapshot[0]

    def get(self, key_id: bytes) -> Key | None:
        """The installed key with this id, or None."""
        return self._snapshot[1].get(key_id)

    @property
    def key_ids(self) -> list[str]:
        """The installed keys' ids as hex, the primary first."""
        primary, keys = self._snapshot
        return [primary.name, *(key.name for key in keys.values() if key is not primary)]

    @property
    def fingerprints(self) -> frozenset[str]:
        """The mDNS fingerprints of every installed key: peers announcing one are taken."""
        return frozenset(key.fingerprint for key in self._snapshot[1].values())

    def accepts_token(self, token: str) -> bool:
        """Whether ``token`` is the bearer token of an installed key (in constant time each)."""
        given = token.encode("utf-8", "surrogateescape")
        matches = [hmac.compare_digest(given, k.token.encode()) for k in self._snapshot[1].values()]
        return any(matches)

    def install(self, secret: Secret) -> str:
        """Step 1 of a rotation: accept ``secret``'s key too; its id. Idempotent."""
        key = derive(secret, self.cluster)
        with self._changing:
            primary, keys = self._snapshot
            self._snapshot = (primary, {**keys, key.key_id: keys.get(key.key_id, key)})
        return key.name

    def use(self, secret: Secret) -> None:
        """Step 2: seal with ``secret``'s key from now on (ValueError unless installed)."""
        key_id = derive(secret, self.cluster).key_id
        with self._changing:
            keys = self._snapshot[1]
            if key_id not in keys:
                raise ValueError(f"key {key_id.hex()} is not installed: install it first")
            self._snapshot = (keys[key_id], keys)

    def remove(self, secret: Secret) -> bool:
        """Step 3: stop accepting ``secret``'s key; whether it was installed.

        ValueError for the primary key: ``use`` another one first.
        """
        key_id = derive(secret, self.cluster).key_id
        with self._changing:
            primary, keys = self._snapshot
            if key_id == primary.key_id:
                raise ValueError(f"key {key_id.hex()} is the primary key: use another one first")
            if key_id not in keys:
                return False
            self._snapshot = (primary, {i: k for i, k in keys.items() if i != key_id})
            return True
