"""One node's sealed side of every exchange: seal what it sends, open what it receives.

A ``Channel`` numbers the envelopes of one process: a random epoch drawn
when it is made, and a seq that only grows, stamped with the injected
clock. What it opens passes the keyring (authentic) and then the replay
guard (fresh), in that order, so that only a member can touch the guard.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable

from agentsync.security.envelope import REQUEST, RESPONSE, Header, open_envelope, seal
from agentsync.security.keyring import Keyring
from agentsync.security.replay import ReplayGuard


class Channel:
    """Seals and opens the sync messages of the node ``sender`` with ``keyring``."""

    def __init__(
        self,
        keyring: Keyring,
        sender: str,
        *,
        clock: Callable[[], float] = time.time,
        replay: ReplayGuard | None = None,
    ) -> None:
        self.keyring = keyring
        self.sender = sender
        self.epoch = secrets.randbits(63)
        """Drawn per process: seqs start again at 1 under a new epoch after a restart."""
        self._seqs = itertools.count(1)
        self._clock = clock
        self._replays = {
            REQUEST: replay or ReplayGuard(clock=clock),
            RESPONSE: ReplayGuard(clock=clock),
        }
        """One guard per kind: a peer's replies and its requests share its seqs, and a reply
        opened before a request queued here would push that request below a shared window."""

    def _seal(self, body: bytes, kind: int, bound: bytes) -> tuple[bytes, bytes]:
        return seal(
            self.keyring.primary, body, kind=kind, sender=self.sender, epoch=self.epoch,
            seq=next(self._seqs), timestamp_ms=round(self._clock() * 1000), bound=bound,
        )  # fmt: skip

    def _open(self, data: bytes, kind: int, bound: bytes) -> tuple[bytes, Header]:
        header, body = open_envelope(self.keyring, data, kind=kind, bound=bound)
        self._replays[kind].admit(header.sender, header.epoch, header.seq, header.timestamp_ms)
        return body, header

    def seal_request(self, body: bytes) -> tuple[bytes, bytes]:
        """The sealed request, and its header (``open_response`` takes it)."""
        return self._seal(body, REQUEST, b"")

    def open_request(self, data: bytes) -> tuple[bytes, Header]:
        """The body of an authentic, fresh request, and its header.

        ``seal_response`` takes the header's ``raw`` bytes; its ``sender`` is
        who sealed it, which the message inside must name as its sender.
        """
        return self._open(data, REQUEST, b"")

    def seal_response(self, body: bytes, request: bytes) -> bytes:
        """The sealed answer to the request whose header is ``request``."""
        return self._seal(body, RESPONSE, request)[0]

    def open_response(self, data: bytes, request: bytes) -> tuple[bytes, Header]:
        """The body of an authentic, fresh answer to the request whose header is ``request``,
        and its header (whose ``sender`` the message inside must name)."""
        return self._open(data, RESPONSE, request)
