"""Exceptions shared by every layer of agentsync."""

from __future__ import annotations


class AgentsyncError(Exception):
    """Base class of every exception that agentsync defines."""


class DecodeError(AgentsyncError, ValueError):
    """Bytes from outside (the wire, a file) are malformed; nothing was changed."""


class IntegerRangeError(AgentsyncError, ValueError, TypeError):
    """An int does not fit the signed 64 bits that replicas and the wire carry.

    It is a ValueError (the value is wrong) and a TypeError (int64 is the
    accepted type), so either ``except`` clause catches it.
    """


class ProtocolError(AgentsyncError, ValueError):
    """A well-formed sync message that this node cannot accept; nothing was changed."""


class ClusterMismatchError(ProtocolError):
    """A sync message from a node of another cluster."""


class AuthenticationError(AgentsyncError):
    """A message or request that fails the cluster's authentication; nothing was read.

    Not a ProtocolError nor a ValueError: the server answers it with 401,
    never with the 400 of a malformed message.
    """


class PeerUnavailableError(AgentsyncError):
    """A peer could not be reached, timed out, or answered with an error.

    ``status`` is the HTTP status of an error answer (None for anything else).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ForgedDotsError(ProtocolError):
    """A message claims dots under this node's own replica id that it never issued.

    Merging them would make this replica's next writes look already seen, so
    peers would drop them silently. Either the sender forged them, or this
    node reuses a replica id whose later writes were lost (a data directory
    restored from a backup taken after a clean stop).
    """

    def __init__(self, sender: str, replica_id: str, claimed: int, issued: int) -> None:
        super().__init__(
            f"{sender} claims dot {claimed} of this node's replica {replica_id!r}, "
            f"which issued only {issued}"
        )
        self.sender = sender
        self.replica_id = replica_id
        self.claimed = claimed
        self.issued = issued


class AccessDeniedError(ProtocolError):
    """A sync message this node's ACL does not let its sender send (the server answers 403).

    A peer limited in what it may read here must be a read-only observer
    (``docs/security.md``, "Access control"): anything else it sends is
    refused whole, nothing of it merged.
    """


class ImpersonationError(AccessDeniedError):
    """A sync message naming another sender than the node id its TLS certificate names.

    Only with ``TLSConfig(bind_node_ids=True)``; the server answers 403 and
    nothing of the message is merged (``docs/security.md``, "Binding node ids").
    """

    def __init__(self, claimed: str, certified: str) -> None:
        super().__init__(f"the message names sender {claimed!r}, its certificate {certified!r}")
        self.claimed = claimed
        self.certified = certified


class ReadOnlyError(AgentsyncError, PermissionError):
    """A write to a read-only node (``Node(read_only=True)``): it only pulls state."""
