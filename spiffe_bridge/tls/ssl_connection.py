"""TLS connections of a ``SpiffeSSLContext``: the newest material at the handshake, the peer authorized.

Just before a connection's first handshake step it attaches the newest
*snapshot* of its context (how and why: :mod:`.ssl_context`).

How peers are authorized. OpenSSL verifies the peer's chain (signatures,
validity period, CA constraints) against the union of all bundles. When the
handshake completes, these classes check, in the same ``do_handshake`` call,
that the peer's leaf is an SVID whose chain is anchored in the bundle of *its
own* trust domain (a federated root cannot vouch for another domain's IDs),
then run the authorizer. A refusal raises ``PeerRefusedError`` (an
``ssl.SSLCertVerificationError``) from ``do_handshake``: blocking sockets are
closed, and asyncio treats it as a failed handshake (the connection callback
never runs; ``open_connection`` raises). Reads and writes on a connection that
was not authorized raise too, so nothing can bypass the check.
"""

from __future__ import annotations

import _ssl
import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spiffe_bridge.model import X509Context, X509Svid
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls._peer import verify_peer
from spiffe_bridge.tls.authorize import Authorizer, PeerRefusedError


@dataclass(frozen=True)
class Snapshot:
    """One rotation's worth of material, loaded into its own never-mutated SSLContext."""

    context: ssl.SSLContext
    x509: X509Context
    svid: X509Svid


def _c_sslobj(conn: ssl.SSLSocket | ssl.SSLObject) -> Any:
    """The ``_ssl._SSLSocket`` behind a socket or object (holds the OpenSSL ``SSL*``)."""
    return conn._sslobj  # type: ignore[union-attr]


def _ders(certs: Sequence[Any] | None) -> list[bytes]:
    return [c.public_bytes(_ssl.ENCODING_DER) for c in certs or ()]


def _authorize(sslobj: Any, snapshot: Snapshot, owner: SnapshotContext) -> SpiffeId:
    """The peer's SPIFFE ID once its SVID checks out against the snapshot's bundles and the authorizer."""
    leaf = sslobj.getpeercert(True)
    if not leaf:
        raise PeerRefusedError("peer presented no certificate")
    verified = _ders(sslobj.get_verified_chain()) if hasattr(sslobj, "get_verified_chain") else []
    sent = _ders(sslobj.get_unverified_chain()) if hasattr(sslobj, "get_unverified_chain") else []
    if sent and sent[0] == leaf:
        sent = sent[1:]
    peer_id = verify_peer(
        leaf, snapshot.x509.bundles, intermediates_der=sent, verified_chain_der=verified or None
    )
    owner.authorizer(peer_id)
    return peer_id


class _Handshake:
    """Per-connection state shared by the socket and BIO classes (class-level defaults:
    the stdlib ``_create`` constructors bypass ``__init__``)."""

    _spiffe_owner: SnapshotContext | None = None
    _spiffe_snapshot: Snapshot | None = None
    _spiffe_peer: SpiffeId | None = None
    _spiffe_refusal: PeerRefusedError | None = None

    def _spiffe_start(self, context: ssl.SSLContext, sslobj: Any) -> SnapshotContext | None:
        """Before the first handshake step: remember the facade, attach its newest snapshot."""
        if self._spiffe_owner is None and isinstance(context, SnapshotContext):
            snapshot = context._snapshot()
            sslobj.context = snapshot.context
            self._spiffe_owner, self._spiffe_snapshot = context, snapshot
        return self._spiffe_owner

    def _spiffe_finish(self, sslobj: Any) -> None:
        """After the handshake: verify and authorize the peer once; remember a refusal."""
        owner, snapshot = self._spiffe_owner, self._spiffe_snapshot
        if self._spiffe_peer is not None or owner is None or snapshot is None:
            return
        try:
            self._spiffe_peer = _authorize(sslobj, snapshot, owner)
        except PeerRefusedError as exc:
            self._spiffe_refusal = exc
            raise

    def _spiffe_pending(self) -> bool:
        """True while the handshake (and authorization) is still to be done; re-raises a refusal."""
        if self._spiffe_refusal is not None:
            raise self._spiffe_refusal
        return self._spiffe_peer is None


class _SpiffeSSLSocket(_Handshake, ssl.SSLSocket):
    """``SSLSocket`` that takes the newest snapshot and authorizes the peer in ``do_handshake``."""

    def do_handshake(self, block: bool = False) -> None:
        """Handshake with the newest SVID and bundles, then verify and authorize the peer."""
        sslobj = _c_sslobj(self)
        if sslobj is not None:
            self._spiffe_start(self.context, sslobj)
        super().do_handshake(block)
        try:
            self._spiffe_finish(sslobj)
        except PeerRefusedError:
            self.close()
            raise

    def _spiffe_guard(self) -> None:
        if self._spiffe_pending() and _c_sslobj(self) is not None:
            self.do_handshake()

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read, running (and authorizing) the handshake first if it has not happened."""
        self._spiffe_guard()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        """Write, running (and authorizing) the handshake first if it has not happened."""
        self._spiffe_guard()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        """Send, running (and authorizing) the handshake first if it has not happened."""
        self._spiffe_guard()
        return super().send(data, flags)


class _SpiffeSSLObject(_Handshake, ssl.SSLObject):
    """``SSLObject`` (memory BIO, used by asyncio and anyio) with the same guarantees.

    Its ``context`` property reports the attached snapshot once the handshake
    started, so the facade is remembered in ``_spiffe_owner`` before that.
    """

    def do_handshake(self) -> None:
        """Handshake with the newest SVID and bundles, then verify and authorize the peer."""
        sslobj = _c_sslobj(self)
        self._spiffe_start(self.context, sslobj)
        super().do_handshake()
        self._spiffe_finish(sslobj)

    def _spiffe_guard(self) -> None:
        if self._spiffe_pending():
            self.do_handshake()

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read, running (and authorizing) the handshake first if it has not happened."""
        self._spiffe_guard()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        """Write, running (and authorizing) the handshake first if it has not happened."""
        self._spiffe_guard()
        return super().write(data)


class SnapshotContext(ssl.SSLContext):
    """What these connections need of their context: its newest snapshot and its authorizer.

    ``SpiffeSSLContext`` is the one implementation; the base exists so that the
    connection classes and the facade each live in one module.
    """

    sslsocket_class = _SpiffeSSLSocket
    sslobject_class = _SpiffeSSLObject
    authorizer: Authorizer

    def _snapshot(self) -> Snapshot:
        raise NotImplementedError


def peer_spiffe_id(
    connection: ssl.SSLSocket | ssl.SSLObject | asyncio.StreamWriter | asyncio.BaseTransport,
) -> SpiffeId:
    """The authorized peer's SPIFFE ID of a connection made with a ``SpiffeSSLContext``.

    Accepts the TLS socket, the ``ssl_object``, or an asyncio writer/transport.
    LookupError when the connection has no authorized SPIFFE peer (yet).
    """
    target: object = connection
    if isinstance(connection, asyncio.StreamWriter | asyncio.BaseTransport):
        target = connection.get_extra_info("ssl_object")
    peer = getattr(target, "_spiffe_peer", None)
    if not isinstance(peer, SpiffeId):
        raise LookupError(
            "no authorized SPIFFE peer on this connection (not TLS, handshake not finished, "
            "or its context does not come from spiffe_bridge.tls)"
        )
    return peer
