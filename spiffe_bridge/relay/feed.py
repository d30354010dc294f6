"""The shared latest-message slot of one stream kind, and how streams wait on it.

Every downstream stream of a kind reads the same ``Snapshot``: either the
response bytes (the agent's, set once per upstream change, never per client)
or the status code new and open streams must end with. A change bumps the
version and wakes every waiting stream through one ``asyncio.Event`` that is
swapped for a fresh one on each change, so fan-out costs one ``set()`` no
matter how many streams wait. A slow stream that misses versions simply sends
the newest (every Workload API message carries the full state, so skipping
intermediate ones is correct).

Feeds live on the relay's event loop and are not thread-safe.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc

from spiffe_bridge._wire import Rpc


class Kind(enum.StrEnum):
    """The three streaming RPCs the relay re-serves, valued by their wire names."""

    X509_SVID = Rpc.FETCH_X509_SVID.value
    X509_BUNDLES = Rpc.FETCH_X509_BUNDLES.value
    JWT_BUNDLES = Rpc.FETCH_JWT_BUNDLES.value


#: Details of the state before the first upstream answer.
NOT_READY = "relay has no state from the upstream Workload API yet"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a stream of this kind sends now: ``payload``, or else ends with ``code``."""

    version: int
    payload: bytes | None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    #: ``time.monotonic_ns()`` when the upstream update behind ``payload`` reached the relay.
    received_ns: int = 0
    #: True while ``payload`` is still served although the upstream stream is gone (the hold).
    upstream_lost: bool = False

    @property
    def serving(self) -> bool:
        """True when there is a response to send."""
        return self.payload is not None


class Feed:
    """Latest state of one stream kind plus the counters the relay's stats report."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._snapshot = Snapshot(0, None, grpc.StatusCode.UNAVAILABLE, NOT_READY)
        self._changed = asyncio.Event()
        self.open_streams = 0
        self.messages_sent = 0
        self.upstream_updates = 0
        self.invalid_updates = 0

    @property
    def snapshot(self) -> Snapshot:
        """The current state (immutable; compare ``version`` to detect changes)."""
        return self._snapshot

    def publish(self, payload: bytes, received_ns: int) -> bool:
        """Serve ``payload`` from now on; False (nobody woken) when it equals what is served."""
        current = self._snapshot
        if current.payload == payload:
            if current.upstream_lost:  # upstream is back with the same state
                self._replace(replace(current, upstream_lost=False))
            return False
        self._replace(Snapshot(self._snapshot.version + 1, payload, received_ns=received_ns))
        return True

    def fail(self, code: grpc.StatusCode, details: str) -> bool:
        """End open streams and answer new ones with ``code``; False when already so."""
        current = self._snapshot
        if current.payload is None and current.code == code and current.details == details:
            return False
        self._replace(Snapshot(current.version + 1, None, code, details))
        return True

    def mark_upstream_lost(self) -> None:
        """Note that the payload is now served from memory only; streams are not disturbed."""
        current = self._snapshot
        if current.serving and not current.upstream_lost:
            self._replace(replace(current, upstream_lost=True))

    async def wait_newer(self, version: int) -> Snapshot:
        """Wait until the snapshot's version differs from ``version``; return it."""
        while self._snapshot.version == version:
            await self._changed.wait()
        return self._snapshot

    async def wait_until(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        """Wait until ``predicate(snapshot)`` holds; return that snapshot."""
        while not predicate(self._snapshot):
            await self._changed.wait()
        return self._snapshot

    def _replace(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
