"""Picking the SVID and assembling the certificate lists every format writes.

The rules are spiffe-helper's (pkg/disk/x509.go): the SVID file holds the chain
(only the leaf when intermediates move to the bundle); the bundle holds the
SVID's own trust domain roots, then the moved intermediates, then -- when
federation is merged -- every other trust domain's roots sorted by name;
``omit_expired`` drops certificates whose notAfter is already past from both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from spiffe_bridge.errors import SvidNotFoundError
from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats.options import FormatError, SvidSelectionError, X509Options
from spiffe_bridge.spiffeid import TrustDomain
from spiffe_bridge.x509bundle import X509Bundle
from spiffe_bridge.x509context import X509Context
from spiffe_bridge.x509svid import X509Svid

#: A certificate together with its exact DER bytes.
Cert = tuple[x509.Certificate, bytes]


@dataclass(frozen=True)
class X509Material:
    """The selected SVID and the certificate lists derived from it and the options."""

    svid: X509Svid
    #: certificates for the SVID file: leaf + intermediates (leaf only when they move)
    chain: tuple[Cert, ...]
    #: own trust domain roots, moved intermediates, and merged federated roots
    bundle: tuple[Cert, ...]
    #: federated roots by trust domain when written per trust domain, sorted by name
    federated: tuple[tuple[TrustDomain, tuple[Cert, ...]], ...]
    #: own trust domain roots only (Linkerd trust anchors)
    own_roots: tuple[Cert, ...]
    #: every bundle (own first, then others by name), ignoring include_federated_domains
    all_bundles: tuple[tuple[TrustDomain, tuple[Cert, ...]], ...]


def select_svid(ctx: X509Context, options: X509Options) -> X509Svid:
    """The SVID named by ``hint``/``spiffe_id``, else the default one; SvidSelectionError if absent."""
    try:
        return ctx.svid(hint=options.hint or None, spiffe_id=options.spiffe_id or None)
    except SvidNotFoundError as exc:
        raise SvidSelectionError(str(exc)) from None


def _pairs(bundle: X509Bundle) -> tuple[Cert, ...]:
    return tuple(zip(bundle.authorities, bundle.authorities_der, strict=True))


def _fresh(certs: Iterable[Cert], omit_expired: bool, now: dt.datetime) -> tuple[Cert, ...]:
    if not omit_expired:
        return tuple(certs)
    return tuple(c for c in certs if not c[0].not_valid_after_utc < now)


def x509_material(ctx: X509Context, options: X509Options) -> X509Material:
    """Select the SVID and assemble chain, bundle and federated lists per the options."""
    svid = select_svid(ctx, options)
    now = options.now or dt.datetime.now(dt.UTC)
    own_td = svid.spiffe_id.trust_domain
    own = ctx.bundle_for(own_td)
    if own is None:  # the model guarantees one; keep the error explicit anyway
        raise FormatError(f"no bundle for the SVID's trust domain {own_td}")
    chain: list[Cert] = list(zip(svid.cert_chain, svid.chain_der, strict=True))
    bundle = list(_pairs(own))
    if options.add_intermediates_to_bundle:
        bundle += chain[1:]
        chain = chain[:1]
    others = sorted((b for td, b in ctx.bundles.items() if td != own_td), key=lambda b: b.trust_domain.name)
    federated: list[tuple[TrustDomain, tuple[Cert, ...]]] = []
    if options.include_federated_domains:
        if options.federated_layout == "merged":
            for other in others:
                bundle += _pairs(other)
        elif options.federated_layout == "per-trust-domain":
            federated = [(b.trust_domain, _fresh(_pairs(b), options.omit_expired, now)) for b in others]
        else:
            raise FormatError(f"unknown federated_layout {options.federated_layout!r}")
    everything = [(own_td, _pairs(own))] + [(b.trust_domain, _pairs(b)) for b in others]
    return X509Material(
        svid=svid,
        chain=_fresh(chain, options.omit_expired, now),
        bundle=_fresh(bundle, options.omit_expired, now),
        federated=tuple(federated),
        own_roots=_fresh(_pairs(own), options.omit_expired, now),
        all_bundles=tuple((td, _fresh(c, options.omit_expired, now)) for td, c in everything),
    )


def ders(certs: Sequence[Cert]) -> list[bytes]:
    """The DER bytes of each certificate."""
    return [der for _, der in certs]


def spec(name: str, data: bytes, mode: int) -> FileSpec:
    """A FileSpec, turning a bad configured name into a FormatError."""
    try:
        return FileSpec(name, data, mode)
    except (ValueError, TypeError) as exc:
        raise FormatError(str(exc)) from None


def federated_specs(
    material: X509Material, options: X509Options, extension: str, encode: Callable[[Sequence[Cert]], bytes]
) -> list[FileSpec]:
    """One file per federated trust domain: ``<federated_dir>/<trust domain><extension>``."""
    return [
        spec(f"{options.federated_dir}/{td.name}{extension}", encode(certs), options.cert_file_mode)
        for td, certs in material.federated
    ]
