"""Durable storage of a node's state (layer 3): SQLite in the node's data directory."""

from agentsync.store.sqlite import (
    DURABILITIES,
    Durability,
    Store,
    Stored,
    StoreError,
    StoreLockedError,
)

__all__ = ["DURABILITIES", "Durability", "Store", "StoreError", "StoreLockedError", "Stored"]
