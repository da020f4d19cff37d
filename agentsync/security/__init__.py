"""Authenticated, encrypted gossip for a cluster with a shared secret; pure, no I/O.

``Keyring`` derives the cluster's keys from its secret and rotates them;
``Channel`` seals and opens one node's sync messages in the envelope of
``envelope.py``; ``ReplayGuard`` refuses what was seen before. The threat
model and the formats are in ``docs/security.md``.
"""

from agentsync.security.channel import Channel
from agentsync.security.envelope import Header, open_envelope, seal
from agentsync.security.keyring import Key, Keyring, Secret, check_secret, derive
from agentsync.security.replay import ReplayGuard

__all__ = [
    "Channel",
    "Header",
    "Key",
    "Keyring",
    "ReplayGuard",
    "Secret",
    "check_secret",
    "derive",
    "open_envelope",
    "seal",
]
