"""JWT material on disk: token files, spiffe-helper's ``jwt_bundle.json`` and ``jwks/<td>.json``."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from typing import Any

from spiffe_bridge.formats import JwtOptions
from spiffe_bridge.inspect.detect import Found
from spiffe_bridge.inspect.readers import ReadError, read_bytes
from spiffe_bridge.jwtbundle import JwtBundle, JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.spiffeid import TrustDomain

_JWS_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_JWT = JwtOptions()


def load_jwt(directory: str) -> Found:
    found = Found("jwt")
    helper = os.path.join(directory, _JWT.jwt_bundle_file_name or "")
    bundles: dict[TrustDomain, JwtBundle] = {}
    if _JWT.jwt_bundle_file_name and os.path.lexists(helper):
        data = found.read(helper)
        if data is not None:
            found.attempt(_merge, bundles, helper_jwt_bundles, data, helper)
    jwks = os.path.join(directory, _JWT.jwks_dir or "")
    if _JWT.jwks_dir and os.path.isdir(jwks):
        for name in sorted(n for n in os.listdir(jwks) if n.endswith(".json")):
            data = found.read(os.path.join(jwks, name))
            if data is not None:
                found.attempt(_merge, bundles, jwks_bundle, data, name.removesuffix(".json"), name)
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.path.getsize(path) < 64 * 1024 and looks_like_jws(path):
            token = found.read(path, key=True)
            if token is not None:
                found.tokens.append((path, token.decode("ascii").strip()))
    if bundles:
        found.jwt_bundles = JwtBundleSet(bundles, b"")
    return found


def _merge(
    into: dict[TrustDomain, JwtBundle], parse: Callable[..., dict[TrustDomain, JwtBundle]], *args: Any
) -> None:
    into.update(parse(*args))


def looks_like_jws(path: str) -> bool:
    """True when the file holds one compact JWS (a JWT-SVID token file)."""
    try:
        text = read_bytes(path).decode("ascii").strip()
    except (ReadError, UnicodeDecodeError):
        return False
    return bool(_JWS_RE.match(text))


def helper_jwt_bundles(data: bytes, what: str) -> dict[TrustDomain, JwtBundle]:
    """spiffe-helper's JWT bundle file: ``{"<td>": "<base64 JWKS>"}``."""
    try:
        doc = json.loads(data)
        items = {str(td): base64.b64decode(v) for td, v in doc.items()}
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        raise ReadError(f"{what}: not a spiffe-helper JWT bundle file") from None
    out: dict[TrustDomain, JwtBundle] = {}
    for name, jwks in items.items():
        out.update(jwks_bundle(jwks, name, what))
    return out


def jwks_bundle(data: bytes, trust_domain: str, what: str) -> dict[TrustDomain, JwtBundle]:
    """One JWKS document as the JWT bundle of ``trust_domain``."""
    from spiffe_bridge.errors import SpiffeBridgeError

    try:
        td = TrustDomain.parse(trust_domain)
        return {td: JwtBundle.parse(td, data)}
    except SpiffeBridgeError as exc:
        raise ReadError(f"{what}: {exc}") from None


def load_bundles(path: str, token: str) -> JwtBundleSet:
    """JWT bundles from a JWKS or spiffe-helper bundle file (ReadError when it is neither)."""
    data = read_bytes(path)
    try:
        is_jwks = isinstance(json.loads(data), dict) and "keys" in json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ReadError(f"{path}: not valid JSON") from None
    if not is_jwks:
        return JwtBundleSet(helper_jwt_bundles(data, path), b"")
    name = os.path.basename(path).removesuffix(".json")
    if "." not in name:  # not named after a trust domain: the token's own
        name = JwtSvid.parse_insecure(token).spiffe_id.trust_domain.name
    return JwtBundleSet(jwks_bundle(data, name, path), b"")
