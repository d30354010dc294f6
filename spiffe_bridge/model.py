"""Validated X.509 material: SVIDs, bundles and whole X.509 contexts.

Everything the agent sends is checked here before anyone can use it: one URI
SAN equal to the SPIFFE ID, leaf and CA constraints, the private key matching
the leaf, the chain verifying to the trust domain's bundle, and a non-empty
own bundle. A bad update raises ValidationError and is never half-applied.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from spiffe_bridge.errors import SpiffeIdError, ValidationError
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain

# The checks live in x509check; they are named here too, as this module's API (tls uses them), and
# so that every cache involved in decoding is reachable from this module (benchmarks empty them).
from spiffe_bridge.x509check import (
    CACHE_SIZE,
    CLOCK_SKEW,
    PARSE_ERRORS,
    check_leaf,
    check_times,
    is_ca,
    issued_by,
    load_certs,
    parsed,
    verify_chain,
)

__all__ = [
    "CLOCK_SKEW",
    "X509Bundle",
    "X509BundleSet",
    "X509Context",
    "X509Svid",
    "bundles_from_message",
    "check_leaf",
    "check_times",
    "context_from_message",
    "is_ca",
    "issued_by",
    "parse_svid",
    "parsed",
    "pem_block",
    "verify_chain",
]


def pem_block(label: str, der: bytes) -> bytes:
    """PEM-encode one DER item with 64-column lines (what Go's pem.Encode and OpenSSL write)."""
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN " + label.encode() + b"-----\n" + lines + b"\n-----END " + label.encode() + b"-----\n"


@dataclass(frozen=True, eq=False)
class X509Bundle:
    """The X.509 authorities of one trust domain, in the order the agent sent them."""

    trust_domain: TrustDomain
    authorities: tuple[x509.Certificate, ...]
    authorities_der: tuple[bytes, ...]

    @classmethod
    def parse_der(cls, trust_domain: TrustDomain, blob: bytes) -> X509Bundle:
        """Parse concatenated DER CA certificates; each must be a CA. Repeats come from a cache."""
        return _parse_bundle(trust_domain, bytes(blob))

    @cached_property
    def pem(self) -> bytes:
        """All authorities as concatenated PEM ``CERTIFICATE`` blocks."""
        return b"".join(pem_block("CERTIFICATE", der) for der in self.authorities_der)

    @cached_property
    def der(self) -> bytes:
        """All authorities as concatenated DER (the Workload API encoding)."""
        return b"".join(self.authorities_der)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, X509Bundle)
            and self.trust_domain == other.trust_domain
            and self.authorities_der == other.authorities_der
        )

    def __hash__(self) -> int:
        return hash((self.trust_domain, self.authorities_der))

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``X509Bundle``."""
        from spiffe import X509Bundle as PyX509Bundle

        return PyX509Bundle.parse_raw(self.trust_domain.to_pyspiffe(), self.der)


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


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_bundle(trust_domain: TrustDomain, blob: bytes) -> X509Bundle:
    certs, ders = load_certs(blob, f"bundle for {trust_domain}")
    for i, cert in enumerate(certs):
        if not is_ca(cert):
            raise ValidationError(f"bundle for {trust_domain}: authority {i} is not a CA certificate")
    return X509Bundle(trust_domain, certs, ders)


@dataclass(frozen=True, eq=False)
class X509Context:
    """Everything one FetchX509SVID message says: SVIDs, bundles by trust domain, CRLs.

    ``bundles`` lists the SVIDs' own trust domains first, then federated ones by name.
    ``digest`` identifies the content, so identical re-deliveries can be ignored.
    """

    svids: tuple[X509Svid, ...]
    bundles: Mapping[TrustDomain, X509Bundle]
    federated: frozenset[TrustDomain]
    crls: tuple[bytes, ...]
    digest: bytes

    @property
    def default_svid(self) -> X509Svid:
        """The first SVID, which the Workload API defines as the default identity."""
        return self.svids[0]

    def svid(self, hint: str | None = None, spiffe_id: str | SpiffeId | None = None) -> X509Svid:
        """The SVID with this hint or SPIFFE ID (first match), else the default; SvidNotFoundError if none."""
        if hint is None and spiffe_id is None:
            return self.default_svid
        want = str(spiffe_id) if spiffe_id is not None else None
        for svid in self.svids:
            if hint is not None and svid.hint != hint:
                continue
            if want is not None and str(svid.spiffe_id) != want:
                continue
            return svid
        from spiffe_bridge.errors import SvidNotFoundError
        from spiffe_bridge.loglist import capped

        have = capped(f"{s.spiffe_id} (hint {s.hint!r})" for s in self.svids)
        raise SvidNotFoundError(
            f"no X.509-SVID with hint={hint!r} spiffe_id={want!r}; the agent sent: {have}"
        )

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None:
        """The bundle for a trust domain (own or federated), or None when not trusted."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return self.bundles.get(td)

    def federated_bundles(self) -> tuple[X509Bundle, ...]:
        """Bundles of federated trust domains, sorted by trust domain name."""
        return tuple(b for td, b in self.bundles.items() if td in self.federated)

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``X509Context``."""
        from spiffe import X509BundleSet as PyBundleSet
        from spiffe.workloadapi.x509_context import X509Context as PyContext

        bundles = PyBundleSet.of([b.to_pyspiffe() for b in self.bundles.values()])
        return PyContext([s.to_pyspiffe() for s in self.svids], bundles)


def _parse_td_key(key: str, what: str) -> TrustDomain:
    try:
        return TrustDomain.parse(key)
    except SpiffeIdError as exc:
        raise ValidationError(f"{what} key {key!r} is not a trust domain ID: {exc}") from None


def _check_crls(crls: Iterable[bytes]) -> tuple[bytes, ...]:
    out = []
    for i, der in enumerate(crls):
        try:
            x509.load_der_x509_crl(der)
        except PARSE_ERRORS:
            raise ValidationError(f"CRL {i} is not valid DER") from None
        out.append(bytes(der))
    return tuple(out)


def _digest(parts: Iterable[bytes]) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def context_from_message(message: Any, now: dt.datetime | None = None) -> X509Context:
    """Validate an ``X509SVIDResponse`` and build the context; ValidationError says why not."""
    if not message.svids:
        raise ValidationError("X509SVIDResponse has no SVIDs")
    now = now or dt.datetime.now(dt.UTC)
    own: dict[TrustDomain, X509Bundle] = {}
    svids: list[X509Svid] = []
    digest_parts: list[bytes] = []
    for item in message.svids:  # one pass: each field read once, unchanged SVIDs come from the cache
        sid, hint, chain, key, blob = (
            item.spiffe_id,
            item.hint,
            item.x509_svid,
            item.x509_svid_key,
            item.bundle,
        )
        try:
            td = SpiffeId.parse(sid).trust_domain
        except SpiffeIdError as exc:
            raise ValidationError(f"SVID has an invalid SPIFFE ID: {exc}") from None
        if not blob:
            raise ValidationError(f"SVID {sid}: empty trust bundle")
        bundle = X509Bundle.parse_der(td, blob)
        svids.append(parse_svid(sid, chain, key, bundle, hint, now))
        own.setdefault(td, bundle)
        digest_parts += [sid.encode(), hint.encode(), chain, key, blob]
    federated: dict[TrustDomain, X509Bundle] = {}
    for key in sorted(message.federated_bundles):
        td = _parse_td_key(key, "federated bundle")
        if td in own:
            raise ValidationError(f"federated bundle given for the SVID's own trust domain {td}")
        blob = message.federated_bundles[key]
        digest_parts += [key.encode(), blob]
        if blob:  # an empty bundle means: nothing of that trust domain is trusted
            federated[td] = X509Bundle.parse_der(td, blob)
    crls = _check_crls(message.crl)
    digest_parts += list(crls)
    bundles = dict(own)
    bundles.update(sorted(federated.items(), key=lambda kv: kv[0].name))
    return X509Context(tuple(svids), bundles, frozenset(federated), crls, _digest(digest_parts))


@dataclass(frozen=True, eq=False)
class X509BundleSet:
    """What one FetchX509Bundles message says: bundles by trust domain, and CRLs."""

    bundles: Mapping[TrustDomain, X509Bundle]
    crls: tuple[bytes, ...]
    digest: bytes

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None:
        """The bundle for a trust domain, or None."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return self.bundles.get(td)


def bundles_from_message(message: Any) -> X509BundleSet:
    """Validate an ``X509BundlesResponse``; at least one non-empty bundle is required."""
    bundles: dict[TrustDomain, X509Bundle] = {}
    parts: list[bytes] = []
    for key in sorted(message.bundles):
        td = _parse_td_key(key, "bundle")
        blob = message.bundles[key]
        parts += [key.encode(), blob]
        if blob:
            bundles[td] = X509Bundle.parse_der(td, blob)
    if not bundles:
        raise ValidationError("X509BundlesResponse has no bundles")
    crls = _check_crls(message.crl)
    return X509BundleSet(bundles, crls, _digest(parts + list(crls)))
