"""The aiohttp adapter: sync exchanges over HTTP with msgpack bodies.

``SyncServer`` serves a node's endpoints and hands sync bodies to a
``SyncHandler`` (the Node); ``SyncClient`` sends them to peers. The
transport moves bytes and guards them (size, time, content type); it knows
nothing of the sync protocol inside.
"""

from agentsync.transport.client import SyncClient
from agentsync.transport.server import SyncHandler, SyncServer
from agentsync.transport.urls import normalize_url
from agentsync.transport.wire import DEFAULT_MAX_BODY_BYTES, MSGPACK

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MSGPACK",
    "SyncClient",
    "SyncHandler",
    "SyncServer",
    "normalize_url",
]
