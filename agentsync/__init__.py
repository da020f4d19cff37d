"""agentsync: serverless state sharing for AI and edge agents.

Each agent holds local replicas of delta-state CRDTs, writes to them at once,
and exchanges small deltas with its peers. See ``docs/index.md``.
"""

from agentsync.errors import AgentsyncError, DecodeError, IntegerRangeError

__version__ = "0.1.0.dev0"

__all__ = ["AgentsyncError", "DecodeError", "IntegerRangeError", "__version__"]
