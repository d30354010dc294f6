"""Workload API messages into model objects: each response type's decoder, validating as it goes.

The one place that reads protobuf fields; everything it builds is checked by the
model's public constructors (``X509Bundle.parse_der``, ``parse_svid``,
``JwtBundle.parse``, ``JwtSvid.parse_insecure``, ``check_claims``), so a bad
update raises ValidationError (JwtSvidError for a token) and is never
half-applied. The Broker API's messages have the same fields and decode here too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from google.protobuf import json_format

from spiffe_bridge.errors import JwtSvidError, SpiffeIdError, ValidationError
from spiffe_bridge.jwtbundle import JwtBundle, JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid, check_claims
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.x509bundle import X509Bundle, X509BundleSet
from spiffe_bridge.x509check import PARSE_ERRORS
from spiffe_bridge.x509context import X509Context
from spiffe_bridge.x509svid import X509Svid, parse_svid

__all__ = [
    "decode_jwt_bundles",
    "decode_jwt_svids",
    "decode_jwt_validation",
    "decode_x509_bundles",
    "decode_x509_context",
]


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


def decode_x509_context(message: Any, now: dt.datetime | None = None) -> X509Context:
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


def decode_x509_bundles(message: Any) -> X509BundleSet:
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


def decode_jwt_bundles(message: Any) -> JwtBundleSet:
    """Validate a ``JWTBundlesResponse``; raise ValidationError on any malformed bundle."""
    bundles: dict[TrustDomain, JwtBundle] = {}
    h = hashlib.sha256()
    for key in sorted(message.bundles):
        td = _parse_td_key(key, "JWT bundle")
        blob = message.bundles[key]
        h.update(key.encode() + b"\0" + blob + b"\0")
        bundles[td] = JwtBundle.parse(td, blob)
    return JwtBundleSet(bundles, h.digest())


def decode_jwt_svids(message: Any) -> list[JwtSvid]:
    """Parse the JWT-SVIDs of a ``JWTSVIDResponse`` (just minted: signatures are not checked).

    Raises ValidationError when there are none or a token's subject is not its SPIFFE ID.
    """
    if not message.svids:
        raise ValidationError("JWTSVIDResponse has no SVIDs")
    out = []
    for item in message.svids:
        svid = JwtSvid.parse_insecure(item.svid, item.hint)
        if str(svid.spiffe_id) != item.spiffe_id:
            raise ValidationError(f"JWT-SVID subject differs from its SPIFFE ID {item.spiffe_id}")
        out.append(svid)
    return out


def decode_jwt_validation(token: str, message: Any) -> JwtSvid:
    """The JwtSvid that a ``ValidateJWTSVIDResponse`` (the agent's verdict on ``token``) describes."""
    try:
        claims = json_format.MessageToDict(message.claims)
    except ValueError:  # e.g. a non-finite number, which JSON cannot carry
        raise JwtSvidError("the agent's claims for the token are not valid JSON values") from None
    sid, aud, exp = check_claims({**claims, "sub": message.spiffe_id})
    return JwtSvid(sid, token, aud, exp, claims)
