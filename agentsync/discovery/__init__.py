"""Finding peers and judging whether they answer.

``Membership`` is the sans-IO failure detector: each peer alive, suspect or
dead, from the exchanges the Node reports and the probes it asks for.
"""

from agentsync.discovery.membership import (
    Member,
    Membership,
    MembershipConfig,
    MemberState,
    Source,
    Transition,
)

__all__ = [
    "Member",
    "MemberState",
    "Membership",
    "MembershipConfig",
    "Source",
    "Transition",
]
