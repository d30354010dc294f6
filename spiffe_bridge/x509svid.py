"""X.509-SVIDs: a SPIFFE ID's certificate chain and private key, validated before anyone uses them.

``parse_svid`` checks everything X509-SVID.md asks of one SVID: one URI SAN equal
to the SPIFFE ID, leaf and CA constraints (``x509check``), the private key
matching the leaf, and the chain verifying to the trust domain's bundle. A bad
SVID raises ValidationError.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from spiffe_bridge._encoding import pem_block
from spiffe_bridge.errors import SpiffeIdError, ValidationError
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.x509bundle import X509Bundle
from spiffe_bridge.x509check import (
    CACHE_SIZE,
    PARSE_ERRORS,
    check_leaf,
    check_times,
    is_ca,
    load_certs,
    parsed,
    verify_chain,
)

__all__ = ["X509Svid", "parse_svid"]


@dataclass(frozen=True, eq=False)
class X509Svid:
    """A validated X.509-SVID: SPIFFE ID, chain (leaf first), private key, optional hint."""

    spiffe_id: SpiffeId
    cert_chain: tuple[x509.Certificate, ...]
    chain_der: tuple[bytes, ...]
    private_key: PrivateKeyTypes = field(repr=False)
    key_der: bytes = field(repr=False)
    hint: str = ""

    @property
    def leaf(self) -> x509.Certificate:
        """The SVID's own certificate."""
        return self.cert_chain[0]

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Certificates between the leaf and the bundle's roots."""
        return self.cert_chain[1:]

    @property
    def expires_at(self) -> dt.datetime:
        """The leaf's notAfter (UTC)."""
        return self.leaf.not_valid_after_utc

    @cached_property
    def chain_pem(self) -> bytes:
        """Leaf then intermediates as PEM ``CERTIFICATE`` blocks."""
        return b"".join(pem_block("CERTIFICATE", der) for der in self.chain_der)

    @property
    def key_pem(self) -> bytes:
        """The private key as an unencrypted PKCS#8 PEM ``PRIVATE KEY`` block."""
        return pem_block("PRIVATE KEY", self.key_der)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, X509Svid)
            and self.spiffe_id == other.spiffe_id
            and self.hint == other.hint
            and self.chain_der == other.chain_der
            and self.key_der == other.key_der
        )

    def __hash__(self) -> int:
        return hash((self.spiffe_id, self.chain_der))

    def __repr__(self) -> str:
        expiry = self.expires_at.isoformat()
        return f"X509Svid(spiffe_id={self.spiffe_id!s}, hint={self.hint!r}, expires_at={expiry})"

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``X509Svid``."""
        from spiffe import X509Svid as PyX509Svid

        return PyX509Svid.parse_raw(b"".join(self.chain_der), self.key_der)


def parse_svid(
    spiffe_id: str,
    chain_blob: bytes,
    key_blob: bytes,
    bundle: X509Bundle,
    hint: str = "",
    now: dt.datetime | None = None,
) -> X509Svid:
    """Build and fully validate an X509Svid against ``bundle`` (the SVID's own trust domain).

    Everything but the validity windows depends only on the bytes and the bundle, so it
    is remembered by them (``_validated``): an SVID that did not change since the last
    update -- the other SVIDs of a many-SVID update, or all of them after an agent
    restart -- costs a lookup and the time check, not a parse and a signature check.
    """
    svid = _validated(spiffe_id, bytes(chain_blob), bytes(key_blob), bundle, hint)
    check_times(svid.spiffe_id, svid.cert_chain, now or dt.datetime.now(dt.UTC))
    return svid


@functools.lru_cache(maxsize=CACHE_SIZE)
def _validated(spiffe_id: str, chain_blob: bytes, key_blob: bytes, bundle: X509Bundle, hint: str) -> X509Svid:
    try:
        sid = SpiffeId.parse(spiffe_id)
    except SpiffeIdError as exc:
        raise ValidationError(f"SVID has an invalid SPIFFE ID: {exc}") from None
    if not sid.path:
        raise ValidationError(f"SVID {sid}: a leaf SPIFFE ID needs a path")
    if not chain_blob:
        raise ValidationError(f"SVID {sid}: empty certificate chain")
    if not key_blob:
        raise ValidationError(f"SVID {sid}: empty private key")
    chain, ders = load_certs(chain_blob, f"SVID {sid} chain")
    try:
        key = serialization.load_der_private_key(key_blob, password=None)
    except PARSE_ERRORS as exc:
        raise ValidationError(
            f"SVID {sid}: private key is not unencrypted PKCS#8 DER ({type(exc).__name__})"
        ) from None
    _, leaf_key, leaf_ext = parsed(ders[0])
    check_leaf(sid, chain[0], leaf_ext)
    for i, der in enumerate(ders[1:], start=1):
        if not is_ca(chain[i], parsed(der)[2]):
            raise ValidationError(f"SVID {sid}: chain certificate {i} is not a CA")
    if key.public_key() != leaf_key:  # compared inside OpenSSL, no re-encoding
        raise ValidationError(f"SVID {sid}: private key does not match the leaf certificate")
    if bundle.trust_domain != sid.trust_domain:
        raise ValidationError(f"SVID {sid}: bundle is for another trust domain ({bundle.trust_domain})")
    verify_chain(sid, chain, bundle, ders)
    return X509Svid(sid, chain, ders, key, key_blob, hint)
