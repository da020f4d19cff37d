"""agentsync: serverless state sharing for AI and edge agents.

Each agent holds local replicas of delta-state CRDTs, writes to them at once,
and exchanges small deltas with its peers. See ``docs/index.md``.
"""

__version__ = "0.1.0.dev0"

from agentsync.errors import (  # the Node imports __version__
    AgentsyncError,
    ClusterMismatchError,
    DecodeError,
    ForgedDotsError,
    IntegerRangeError,
    PeerUnavailableError,
    ProtocolError,
    ReadOnlyError,
)
from agentsync.node import Change, Node
from agentsync.workflow import TaskBoard

__all__ = [
    "AgentsyncError",
    "Change",
    "ClusterMismatchError",
    "DecodeError",
    "ForgedDotsError",
    "IntegerRangeError",
    "Node",
    "PeerUnavailableError",
    "ProtocolError",
    "ReadOnlyError",
    "TaskBoard",
    "__version__",
]
