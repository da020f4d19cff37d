"""The envelope every sync message travels in when the cluster has a secret.

Layout (big-endian), the whole header authenticated as AEAD associated data::

    version u8 | kind u8 | key id 8 bytes | epoch u64 | seq u64 | timestamp ms u64
    | nonce 12 bytes | sender length u16 | sender UTF-8 | ciphertext + 16-byte tag

The body is encrypted with AES-256-GCM under a random 12-byte nonce. A
response is sealed with its request's header in the associated data too,
so it opens only as the answer to that very request. ``open_envelope``
parses nothing but this bounded header before the tag is checked, and
every failure is one ``AuthenticationError`` saying why.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from agentsync.errors import AuthenticationError
from agentsync.security.keyring import KEY_ID_BYTES, Key, Keyring

VERSION = 1
REQUEST = 1
RESPONSE = 2
_KINDS = {REQUEST: "request", RESPONSE: "response"}
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_SENDER_BYTES = 1024
"""The longest sender id, in UTF-8 bytes (node ids have at most 239 characters)."""
_FIXED = struct.Struct(f">BB{KEY_ID_BYTES}sQQQ{NONCE_BYTES}sH")
HEADER_MIN_BYTES = _FIXED.size + 1
"""The smallest header: a one-byte sender."""
U64_MAX = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Header:
    """What an envelope says of itself; trusted only once ``open_envelope`` returns it."""

    kind: int
    key_id: bytes
    epoch: int
    seq: int
    timestamp_ms: int
    sender: str
    nonce: bytes
    raw: bytes
    """The header's bytes as authenticated: a response is bound to its request's."""


def seal(
    key: Key,
    body: bytes,
    *,
    kind: int,
    sender: str,
    epoch: int,
    seq: int,
    timestamp_ms: int,
    bound: bytes = b"",
) -> tuple[bytes, bytes]:
    """The envelope of ``body`` and its header's bytes; ``bound`` is authenticated too."""
    if kind not in _KINDS:
        raise ValueError(f"unknown envelope kind {kind}")
    if not all(0 <= n <= U64_MAX for n in (epoch, seq, timestamp_ms)):
        raise ValueError("epoch, seq and timestamp must fit 64 unsigned bits")
    name = sender.encode()
    if not 0 < len(name) <= MAX_SENDER_BYTES:
        raise ValueError(f"a sender id has 1 to {MAX_SENDER_BYTES} bytes in UTF-8")
    nonce = os.urandom(NONCE_BYTES)
    header = (
        _FIXED.pack(VERSION, kind, key.key_id, epoch, seq, timestamp_ms, nonce, len(name)) + name
    )
    return header + key.aead.encrypt(nonce, body, header + bound), header


def read_header(data: bytes) -> Header:
    """The header of ``data``, parsed within its bounds but not yet authenticated."""
    if len(data) < HEADER_MIN_BYTES + TAG_BYTES:
        raise AuthenticationError("not a sealed envelope: too short")
    version, kind, key_id, epoch, seq, timestamp_ms, nonce, size = _FIXED.unpack_from(data)
    if version != VERSION:
        raise AuthenticationError(f"envelope version {version}, this node reads {VERSION}")
    if kind not in _KINDS:
        raise AuthenticationError(f"unknown envelope kind {kind}")
    end = _FIXED.size + size
    if not 0 < size <= MAX_SENDER_BYTES or len(data) < end + TAG_BYTES:
        raise AuthenticationError("envelope sender id is empty, too long or cut short")
    try:
        sender = data[_FIXED.size : end].decode()
    except UnicodeDecodeError:
        raise AuthenticationError("envelope sender id is not UTF-8") from None
    return Header(kind, key_id, epoch, seq, timestamp_ms, sender, nonce, bytes(data[:end]))


def open_envelope(
    keyring: Keyring, data: bytes, *, kind: int, bound: bytes = b""
) -> tuple[Header, bytes]:
    """The authenticated header and the body of ``data``; AuthenticationError if it fails.

    The key is the installed one the header names; the tag covers the header
    and ``bound``, so a flipped bit anywhere, another key, another cluster
    or a response to another request all fail here.
    """
    header = read_header(data)
    if header.kind != kind:
        raise AuthenticationError(f"a sealed {_KINDS[header.kind]} where a {_KINDS[kind]} belongs")
    key = keyring.get(header.key_id)
    if key is None:
        raise AuthenticationError(
            f"sealed with key {header.key_id.hex()}, which is not installed here "
            "(another secret, or another cluster)"
        )
    try:
        body = key.aead.decrypt(header.nonce, data[len(header.raw) :], header.raw + bound)
    except InvalidTag:
        reason = "the envelope failed authentication: altered or forged"
        raise AuthenticationError(reason) from None
    return header, body
