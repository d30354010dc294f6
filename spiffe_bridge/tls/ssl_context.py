"""Stdlib ``ssl`` contexts that follow an X.509 source and authorize peers by SPIFFE ID.

``server_ssl_context(source, authorizer)`` and ``client_ssl_context(source,
authorizer)`` return a ``SpiffeSSLContext``: a real ``ssl.SSLContext`` that can
be handed to ``asyncio.start_server``, ``http.server``, ``http.client``,
``urllib``, httpx or urllib3, and that stays correct across rotations without
being rebuilt by its user.

How rotation works. A context's certificate can be replaced in place, but its
trust store can only grow (``load_verify_locations`` adds), and mutating a
context while other threads handshake with it races inside OpenSSL. So for
every new X.509 context from the source we build a fresh, private
``ssl.SSLContext`` (the *snapshot*: current SVID + exactly the current
bundles) and never touch it again. The object the user holds is a facade: its
``wrap_socket``/``wrap_bio`` produce our ``SSLSocket``/``SSLObject``
subclasses, which, just before their first handshake step, attach the newest
snapshot to the connection (``SSL_set_SSL_CTX``, the same mechanism as an SNI
callback swapping ``ssl_object.context``). Per-connection settings (verify
mode, protocol versions, options, client ALPN, SNI callback) still come from
the facade; certificate, key and trust come from the snapshot.

How peers are authorized (after the chain check OpenSSL does, by SPIFFE ID and
per trust domain) and how a connection picks up its snapshot is
:mod:`.ssl_connection`; ``peer_spiffe_id`` reads the verdict.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any

from spiffe_bridge.model import X509Context, X509Svid
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls._follow import Follower
from spiffe_bridge.tls._keyfiles import PrivateKeyDir
from spiffe_bridge.tls.authorize import Authorizer
from spiffe_bridge.tls.ssl_connection import Snapshot, SnapshotContext

Configure = Callable[[ssl.SSLContext], None]


class SpiffeSSLContext(SnapshotContext):
    """An ``ssl.SSLContext`` presenting the source's current SVID and trusting its current bundles.

    Create it with ``server_ssl_context`` or ``client_ssl_context``. Every new
    connection uses the material current at its handshake; established
    connections are unaffected by rotations. ``authorizer`` may be replaced at
    any time and applies to new handshakes. Hostname checking is off (SPIFFE
    peers are identified by the URI SAN) and the peer is always verified.
    """

    def __new__(
        cls,
        source: X509SourceLike,
        authorizer: Authorizer,
        *,
        server_side: bool,
        **options: Any,
    ) -> SpiffeSSLContext:
        protocol = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
        return super().__new__(cls, protocol)

    def __init__(
        self,
        source: X509SourceLike,
        authorizer: Authorizer,
        *,
        server_side: bool,
        svid_hint: str | None = None,
        spiffe_id: SpiffeId | str | None = None,
        configure: Configure | None = None,
        key_dir_parent: str | None = None,
    ) -> None:
        self.authorizer = authorizer
        self.server_side = server_side
        self._svid_hint = svid_hint
        self._svid_id = spiffe_id
        self._configure = configure
        self._alpn: tuple[str, ...] | None = None
        self._ciphers: str | None = None
        _base_settings(self, server_side)
        if configure is not None:
            configure(self)
        self._keys = PrivateKeyDir(key_dir_parent)
        try:
            self._follower: Follower[Snapshot] = Follower(source, self._build, "ssl context")
        except BaseException:
            self._keys.close()
            raise

    # ----- the per-rotation snapshot -----
    def _build(self, x509: X509Context) -> Snapshot:
        svid = x509.svid(hint=self._svid_hint, spiffe_id=self._svid_id)
        protocol = ssl.PROTOCOL_TLS_SERVER if self.server_side else ssl.PROTOCOL_TLS_CLIENT
        context = ssl.SSLContext(protocol)
        _base_settings(context, self.server_side)
        self._keys.load_cert_chain(context, svid.chain_pem, svid.key_pem)
        context.load_verify_locations(cadata=b"".join(b.der for b in x509.bundles.values()))
        if self._alpn is not None:
            context.set_alpn_protocols(list(self._alpn))
        if self._ciphers is not None:
            context.set_ciphers(self._ciphers)
        if self._configure is not None:
            self._configure(context)
        return Snapshot(context, x509, svid)

    def _snapshot(self) -> Snapshot:
        return self._follower.current[1]

    # ----- what the user sees -----
    @property
    def svid(self) -> X509Svid:
        """The SVID new connections present."""
        return self._snapshot().svid

    @property
    def x509_context(self) -> X509Context:
        """The X.509 context (SVIDs and bundles) new connections use."""
        return self._snapshot().x509

    @property
    def generation(self) -> int:
        """Starts at 1; goes up each time new material is loaded."""
        return self._follower.generation

    @property
    def last_error(self) -> Exception | None:
        """Why the latest rebuild failed (the previous material stays in use), if it did."""
        return self._follower.last_error

    @property
    def key_directory(self) -> str:
        """The private 0700 directory key files pass through while OpenSSL loads them."""
        return self._keys.path

    def wait_for(self, predicate: Callable[[X509Context], bool], timeout: float | None = 30.0) -> X509Context:
        """Block until new connections use material from a context satisfying ``predicate``."""
        return self._follower.wait_for(predicate, timeout)

    def close(self) -> None:
        """Stop following the source and remove the key directory (idempotent).

        New connections keep using the last loaded material (it lives in OpenSSL's memory).
        """
        self._follower.close()
        self._keys.close()

    def __enter__(self) -> SpiffeSSLContext:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----- settings that live in the snapshot, recorded so every snapshot gets them -----
    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        """Set ALPN; on servers every snapshot gets it too (OpenSSL selects ALPN per SSL_CTX)."""
        super().set_alpn_protocols(alpn_protocols)
        protocols = tuple(alpn_protocols)
        if self.server_side and protocols != self._alpn:
            self._alpn = protocols
            self._refresh()

    def set_ciphers(self, cipherlist: str) -> None:
        """Set the TLS 1.2 cipher list on this context and every snapshot."""
        super().set_ciphers(cipherlist)
        if cipherlist != self._ciphers:
            self._ciphers = cipherlist
            self._refresh()

    def _refresh(self) -> None:
        follower: Follower[Snapshot] | None = getattr(self, "_follower", None)
        if follower is not None:
            follower.refresh()

    @property  # type: ignore[override]
    def verify_mode(self) -> ssl.VerifyMode:
        """Always ``CERT_REQUIRED``: a SPIFFE peer without a verified SVID is never accepted."""
        return ssl.SSLContext.verify_mode.__get__(self)  # type: ignore[attr-defined,no-any-return]

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        if value != ssl.CERT_REQUIRED:
            raise ValueError("SPIFFE TLS contexts always require and verify the peer's certificate")
        ssl.SSLContext.verify_mode.__set__(self, value)  # type: ignore[attr-defined]

    @property
    def check_hostname(self) -> bool:
        """Always False: SPIFFE peers are identified by their URI SAN, checked by the authorizer."""
        return False

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        if value:
            raise ValueError(
                "SPIFFE TLS contexts identify peers by SPIFFE ID (URI SAN), not hostname; "
                "use an authorizer instead of check_hostname"
            )
        ssl.SSLContext.check_hostname.__set__(self, False)  # type: ignore[attr-defined]


def _base_settings(context: ssl.SSLContext, server_side: bool) -> None:
    """Settings of every facade and snapshot: verify the peer, no hostname check, TLS >= 1.2,
    and (servers) no session tickets, so every connection runs a full, authorized handshake."""
    if isinstance(context, SpiffeSSLContext):
        ssl.SSLContext.check_hostname.__set__(context, False)  # type: ignore[attr-defined]
        ssl.SSLContext.verify_mode.__set__(context, ssl.CERT_REQUIRED)  # type: ignore[attr-defined]
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if server_side:
        context.num_tickets = 0
        context.options |= ssl.OP_NO_TICKET


def server_ssl_context(
    source: X509SourceLike,
    authorizer: Authorizer,
    *,
    svid_hint: str | None = None,
    spiffe_id: SpiffeId | str | None = None,
    configure: Configure | None = None,
    key_dir_parent: str | None = None,
) -> SpiffeSSLContext:
    """A server ``ssl.SSLContext`` requiring client SVIDs that ``authorizer`` accepts.

    ``svid_hint``/``spiffe_id`` pick which of the workload's SVIDs to present
    (default: the first). ``configure(ctx)`` is applied to this context and to
    every per-rotation snapshot, for settings such as ciphers or key logging.
    """
    return SpiffeSSLContext(
        source,
        authorizer,
        server_side=True,
        svid_hint=svid_hint,
        spiffe_id=spiffe_id,
        configure=configure,
        key_dir_parent=key_dir_parent,
    )


def client_ssl_context(
    source: X509SourceLike,
    authorizer: Authorizer,
    *,
    svid_hint: str | None = None,
    spiffe_id: SpiffeId | str | None = None,
    configure: Configure | None = None,
    key_dir_parent: str | None = None,
) -> SpiffeSSLContext:
    """A client ``ssl.SSLContext`` presenting our SVID and accepting servers ``authorizer`` accepts."""
    return SpiffeSSLContext(
        source,
        authorizer,
        server_side=False,
        svid_hint=svid_hint,
        spiffe_id=spiffe_id,
        configure=configure,
        key_dir_parent=key_dir_parent,
    )
