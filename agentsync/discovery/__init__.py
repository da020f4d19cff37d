"""Finding peers and judging whether they answer.

``Membership`` is the sans-IO failure detector: each peer alive, suspect or
dead, from the exchanges the Node reports and the probes it asks for.
``MdnsDiscovery`` announces this node on the LAN and reports the nodes of
its cluster that announce (hints, which membership probes).
"""

from agentsync.discovery.mdns import SERVICE_TYPE, Discovered, MdnsDiscovery
from agentsync.discovery.membership import (
    Member,
    Membership,
    MembershipConfig,
    MemberState,
    Source,
    Transition,
)

__all__ = [
    "SERVICE_TYPE",
    "Discovered",
    "MdnsDiscovery",
    "Member",
    "MemberState",
    "Membership",
    "MembershipConfig",
    "Source",
    "Transition",
]
