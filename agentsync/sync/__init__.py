"""The anti-entropy protocol, sans-IO: messages in, messages out.

``SyncEngine`` holds one node's replicas and its side of every exchange;
``encode_message`` and ``decode_message`` are the validated wire form. No
sockets, no asyncio, no clocks: the transport and the tests drive it.
"""

from agentsync.sync.engine import SyncEngine, SyncMetrics
from agentsync.sync.messages import (
    PROTOCOL_VERSION,
    Piece,
    SyncMessage,
    decode_message,
    encode_message,
)
from agentsync.sync.pruning import PruningConfig

__all__ = [
    "PROTOCOL_VERSION",
    "Piece",
    "PruningConfig",
    "SyncEngine",
    "SyncMessage",
    "SyncMetrics",
    "decode_message",
    "encode_message",
]
