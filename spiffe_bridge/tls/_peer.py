"""Verify a TLS peer's certificate as an X509-SVID of its own trust domain.

OpenSSL (and gRPC core) verify the peer's chain against *all* trusted roots
in one store, own and federated. That alone would let the root of any
federated trust domain vouch for an ID in any other trust domain. After the
handshake we therefore check, per X509-SVID.md §5, that the peer's leaf is a
well-formed SVID and that its chain ends at an authority in the bundle of the
trust domain named in its SPIFFE ID. Leaf and chain checks reuse the model's
validators, so the rules are the ones applied to our own SVIDs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from cryptography import x509

from spiffe_bridge import x509check
from spiffe_bridge.errors import SpiffeIdError, ValidationError
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls.authorize import PeerRefusedError
from spiffe_bridge.x509bundle import X509Bundle


def spiffe_id_of(leaf: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in a leaf's single URI SAN; PeerRefusedError when there is not exactly one."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerRefusedError("peer certificate has no URI SAN, so no SPIFFE ID") from None
    except ValueError as exc:
        raise PeerRefusedError(f"peer certificate has malformed extensions: {exc}") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise PeerRefusedError(f"peer certificate must have exactly one URI SAN, found {len(uris)}: {uris}")
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise PeerRefusedError(f"peer certificate URI SAN is not a valid SPIFFE ID: {exc}") from None


def _load(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PeerRefusedError(f"{what} is not a valid certificate: {exc}") from None


def verify_peer(
    leaf_der: bytes,
    bundles: Mapping[TrustDomain, X509Bundle],
    *,
    intermediates_der: Sequence[bytes] = (),
    verified_chain_der: Sequence[bytes] | None = None,
    check_times: bool = True,
    now: dt.datetime | None = None,
) -> SpiffeId:
    """Return the peer's SPIFFE ID once its leaf is a valid SVID of a trust domain in ``bundles``.

    With ``verified_chain_der`` (the chain OpenSSL built and verified, leaf first,
    trust anchor last) the anchor must be an authority of the ID's trust domain.
    Without it (resumed TLS sessions, gRPC) the chain ``leaf + intermediates_der``
    is verified here by signature up to a root of that trust domain.
    Raises PeerRefusedError naming the peer's ID whenever it is known.
    """
    leaf = _load(leaf_der, "peer certificate")
    peer_id = spiffe_id_of(leaf)
    if not peer_id.path:
        raise PeerRefusedError(f"peer {peer_id}: an SVID's SPIFFE ID needs a path", peer_id)
    try:
        x509check.check_leaf(peer_id, leaf)
    except ValidationError as exc:
        raise PeerRefusedError(f"peer {exc}", peer_id) from None
    bundle = bundles.get(peer_id.trust_domain)
    if bundle is None:
        raise PeerRefusedError(
            f"peer {peer_id}: trust domain {peer_id.trust_domain} is not trusted here (no bundle for it)",
            peer_id,
        )
    if verified_chain_der:
        anchor = verified_chain_der[-1]
        if anchor not in bundle.authorities_der:
            raise PeerRefusedError(
                f"peer {peer_id}: certificate chain is anchored in another trust domain's authority, "
                f"not in the bundle of {peer_id.trust_domain}",
                peer_id,
            )
        return peer_id
    chain = [leaf]
    for i, der in enumerate(intermediates_der, start=1):
        if der == leaf_der and i == 1:
            continue  # some stacks report the leaf again at the start of the chain
        cert = _load(der, f"peer {peer_id}: chain certificate {i}")
        if not x509check.is_ca(cert):
            raise PeerRefusedError(f"peer {peer_id}: chain certificate {i} is not a CA", peer_id)
        chain.append(cert)
    try:
        if check_times:
            x509check.check_times(peer_id, chain, now or dt.datetime.now(dt.UTC))
        x509check.verify_chain(peer_id, tuple(chain), bundle)
    except ValidationError as exc:
        raise PeerRefusedError(f"peer {exc}", peer_id) from None
    return peer_id
