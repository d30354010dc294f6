"""What is wrong with material found on disk: key <-> leaf, chain <-> bundle, expiry, modes, tokens.

Each check yields :class:`Finding` lines, good ones too, so ``inspect`` can show what
it verified. The SVID rules are the model's (:mod:`spiffe_bridge.x509check`), applied to
files instead of an agent's message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spiffe_bridge._encoding import b64url_decode
from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.formats import linkerd as linkerd_format
from spiffe_bridge.inspect.describe import iso, uri_sans
from spiffe_bridge.inspect.detect import OWN, Found
from spiffe_bridge.jwtsvid import JwtSvid, validate_jwt_svid
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.x509bundle import X509Bundle
from spiffe_bridge.x509check import CLOCK_SKEW, check_leaf, verify_chain


@dataclass(frozen=True)
class Finding:
    """One verdict: which check, whether it passed, and what was seen."""

    check: str
    ok: bool
    detail: str


def check(found: Found, now: dt.datetime | None = None) -> list[Finding]:
    """Every finding for one file set (problems reading it come first)."""
    now = now or dt.datetime.now(dt.UTC)
    out = [Finding("read", False, p) for p in found.problems]
    out += _svid(found, now)
    out += _expiry(found, now)
    out += _modes(found)
    out += _tokens(found, now)
    out += _linkerd(found)
    return out


def leaf_id(leaf: x509.Certificate) -> SpiffeId | None:
    """The SPIFFE ID in the leaf's only URI SAN, or None."""
    uris = uri_sans(leaf)
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeBridgeError:
        return None


def bundle_for(found: Found, td: TrustDomain) -> X509Bundle | None:
    """The bundle of ``td`` from the files (or the unnamed own bundle); ValidationError if it is bad."""
    certs = found.bundles.get(td.name, found.bundles.get(OWN))
    if not certs:
        return None
    der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
    return X509Bundle.parse_der(td, der)


def _svid(found: Found, now: dt.datetime) -> Iterator[Finding]:
    if not found.chain:
        if found.key is not None and found.complete:
            yield Finding("key", False, "a private key without a certificate chain")
        return
    leaf = found.chain[0]
    sid = leaf_id(leaf)
    if sid is None:
        yield Finding("leaf", False, f"leaf has no single SPIFFE ID URI SAN (found {uri_sans(leaf)})")
        return
    try:
        check_leaf(sid, leaf)
        yield Finding("leaf", True, f"{sid} is a valid X509-SVID leaf")
    except SpiffeBridgeError as exc:
        yield Finding("leaf", False, str(exc))
    if found.key is None:
        if found.complete:
            yield Finding("key", False, "no private key found next to the certificate chain")
    elif found.key.public_key() == leaf.public_key():
        yield Finding("key", True, "private key matches the leaf certificate")
    else:
        yield Finding("key", False, "private key does NOT match the leaf certificate (mixed rotations?)")
    try:
        bundle = bundle_for(found, sid.trust_domain)
    except SpiffeBridgeError as exc:
        yield Finding("chain", False, str(exc))
        return
    if bundle is None:
        if found.complete:
            yield Finding(
                "chain", False, f"no trust bundle for {sid.trust_domain} to verify the chain against"
            )
        return
    try:
        verify_chain(sid, tuple(found.chain), bundle)
        yield Finding("chain", True, f"chain verifies against the bundle of {sid.trust_domain}")
    except SpiffeBridgeError as exc:
        yield Finding("chain", False, str(exc))


def _window(what: str, cert: x509.Certificate, now: dt.datetime) -> Finding | None:
    if cert.not_valid_after_utc <= now:
        return Finding("expiry", False, f"{what} expired at {iso(cert.not_valid_after_utc)}")
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        return Finding(
            "expiry", False, f"{what} is not valid before {iso(cert.not_valid_before_utc)} (clock?)"
        )
    return None


def _expiry(found: Found, now: dt.datetime) -> Iterator[Finding]:
    bad = False
    for i, cert in enumerate(found.chain):
        finding = _window("leaf" if i == 0 else f"chain certificate {i}", cert, now)
        if finding is not None:
            bad = True
            yield finding
    for td, certs in found.bundles.items():
        for i, cert in enumerate(certs):
            finding = _window(f"bundle {td or '(own)'} authority {i}", cert, now)
            if finding is not None:
                bad = True
                yield finding
    if found.chain and not bad:
        left = found.chain[0].not_valid_after_utc - now
        yield Finding(
            "expiry", True, f"leaf valid until {iso(found.chain[0].not_valid_after_utc)} ({_human(left)})"
        )


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h left"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m left"
    return f"{seconds // 60}m {seconds % 60}s left"


def _modes(found: Found) -> Iterator[Finding]:
    bad: list[Finding] = []
    for path in found.paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue  # already reported as a read problem
        if path in found.key_paths and mode & 0o077:
            bad.append(
                Finding("mode", False, f"{path} holds a secret but is mode {mode:04o}; fix: chmod 600 {path}")
            )
        elif mode & 0o002:
            bad.append(
                Finding("mode", False, f"{path} is world-writable ({mode:04o}); fix: chmod o-w {path}")
            )
    yield from bad
    if found.key_paths and not bad:
        yield Finding("mode", True, "files holding secrets are readable by their owner only")


def _tokens(found: Found, now: dt.datetime) -> Iterator[Finding]:
    for path, token in found.tokens:
        try:
            svid = JwtSvid.parse_insecure(token)
        except SpiffeBridgeError as exc:
            yield Finding("jwt", False, f"{path}: {exc}")
            continue
        if svid.expiry <= now.timestamp():
            yield Finding("jwt", False, f"{path}: token for {svid.spiffe_id} expired at {_ts(svid.expiry)}")
            continue
        if found.jwt_bundles is None:
            yield Finding(
                "jwt", True, f"{path}: {svid.spiffe_id} until {_ts(svid.expiry)} (signature not checked)"
            )
            continue
        try:
            validate_jwt_svid(token, svid.audience[0], found.jwt_bundles, now.timestamp())
            yield Finding("jwt", True, f"{path}: {svid.spiffe_id} signature verifies against the JWT bundle")
        except SpiffeBridgeError as exc:
            yield Finding("jwt", False, f"{path}: {exc}")


def token_header(token: str) -> dict[str, object]:
    """The JOSE header of a compact JWS (empty when it does not parse)."""
    try:
        header = json.loads(b64url_decode(token.split(".")[0]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return header if isinstance(header, dict) else {}


def _ts(epoch: int) -> str:
    return iso(dt.datetime.fromtimestamp(epoch, dt.UTC))


def _linkerd(found: Found) -> Iterator[Finding]:
    if found.format != "linkerd" or not found.env:
        return
    server_id = found.env.get(linkerd_format.SERVER_ID, "")
    try:
        SpiffeId.parse(server_id)
        yield Finding("linkerd", True, f"{linkerd_format.SERVER_ID} is {server_id}")
    except SpiffeBridgeError as exc:
        yield Finding("linkerd", False, f"{linkerd_format.SERVER_ID} {server_id!r}: {exc}")
    for name in (linkerd_format.SERVER_NAME, linkerd_format.WORKLOAD_API_ADDRESS):
        if not found.env.get(name):
            yield Finding("linkerd", False, f"{name} is missing or empty")
