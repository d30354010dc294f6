"""Recognising a single file by its content (when a path, not a directory, is inspected).

The order matters: structured text first (JSON, env file, JWS, PEM), then binary
(DER certificates, a PKCS#8 key, PKCS#12). The result names the format whose writer
produces such a file.
"""

from __future__ import annotations

import json
import os

from spiffe_bridge.credential_folder import CREDENTIAL_BUNDLE, TRUST_BUNDLE_SUFFIX
from spiffe_bridge.formats import linkerd as linkerd_format
from spiffe_bridge.inspect import detect, jwt_files
from spiffe_bridge.inspect.readers import ReadError, der_certs, load_key, pem_blocks, pem_certs
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.x509check import is_ca


def detect_file(path: str, pkcs12_password: str | None = None) -> detect.Found:
    """What ``path`` holds; a file nothing recognises comes back with a problem saying so."""
    probe = detect.Found("unknown")
    data = probe.read(path)
    if data is None:
        return probe
    name = os.path.basename(path)
    for sniff in (_json, _env, _jws, _pem, _binary):
        found = sniff(path, name, data, pkcs12_password)
        if found is not None:
            found.paths = probe.paths
            found.complete = False
            return found
    probe.problems.append(
        f"{path}: not a format spiffe-bridge writes (pem, combined, der, p12, SDS JSON, ...)"
    )
    return probe


def _json(path: str, name: str, data: bytes, _pw: str | None) -> detect.Found | None:
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    if "resources" in doc:
        found = detect.Found("envoy-sds")
        found.attempt(lambda: detect.envoy_secret(found, data, name, path))
        if found.chain:
            found.key_paths.append(path)
        return found
    found = detect.Found("jwt")
    if "keys" in doc:
        td = name.removesuffix(".json")
        found.attempt(
            lambda: setattr(found, "jwt_bundles", JwtBundleSet(jwt_files.jwks_bundle(data, td, name), b""))
        )
    else:
        found.attempt(
            lambda: setattr(found, "jwt_bundles", JwtBundleSet(jwt_files.helper_jwt_bundles(data, name), b""))
        )
    return found


def _env(path: str, name: str, data: bytes, _pw: str | None) -> detect.Found | None:
    if linkerd_format.TRUST_ANCHORS.encode() not in data:
        return None
    found = detect.Found("linkerd")
    found.attempt(lambda: detect.linkerd_env(found, data, name))
    return found


def _jws(path: str, name: str, data: bytes, _pw: str | None) -> detect.Found | None:
    if not jwt_files.looks_like_jws(path):
        return None
    found = detect.Found("jwt", key_paths=[path])
    found.tokens.append((path, data.decode("ascii").strip()))
    return found


def _pem(path: str, name: str, data: bytes, _pw: str | None) -> detect.Found | None:
    if b"-----BEGIN " not in data:
        return None
    try:
        blocks, _ = pem_blocks(data)
    except ReadError as exc:
        found = detect.Found("pem")
        found.problems.append(f"{path}: {exc}")
        return found
    labels = [b.label for b in blocks]
    if "PRIVATE KEY" in labels and "CERTIFICATE" in labels:
        spiffe_fs = name == CREDENTIAL_BUNDLE or labels[0] == "PRIVATE KEY"
        found = detect.Found("spiffe-fs" if spiffe_fs else "combined", key_paths=[path])
        found.attempt(lambda: detect.key_and_certs(found, data, name, key_first=spiffe_fs))
        return found
    found = detect.Found("spiffe-fs" if name.endswith(TRUST_BUNDLE_SUFFIX) else "pem")
    if labels == ["PRIVATE KEY"]:
        found.key_paths.append(path)
        found.attempt(lambda: setattr(found, "key", load_key(blocks[0].der, name)))
        return found
    found.attempt(lambda: _certs(found, pem_certs(data, name), name))
    return found


def _certs(found: detect.Found, certs: list, name: str) -> None:  # type: ignore[type-arg]
    """A chain when the first certificate is a leaf, else a bundle (named after the file's trust domain)."""
    if certs and not is_ca(certs[0]):
        found.chain = certs
        return
    td = name.removesuffix(TRUST_BUNDLE_SUFFIX) if found.format == "spiffe-fs" else detect.OWN
    found.bundles[td] = certs


def _binary(path: str, name: str, data: bytes, password: str | None) -> detect.Found | None:
    if not data.startswith(b"\x30"):
        return None
    try:
        certs = der_certs(data, name)
    except ReadError:
        certs = []
    if certs:
        found = detect.Found("der")
        _certs(found, certs, name)
        return found
    try:
        key = load_key(data, name)
    except ReadError:
        key = None
    if key is not None:
        found = detect.Found("der", key_paths=[path])
        found.key = key
        return found
    found = detect.Found("pkcs12", key_paths=[path])
    secret = password.encode() if password else None
    store = None
    try:
        store = detect.open_p12(data, secret, name)
    except ReadError as exc:
        found.problems.append(str(exc))
        return found
    if store.key is not None and store.cert is not None:
        found.attempt(lambda: detect.load_keystore(found, data, secret, name))
    else:
        found.key_paths.clear()
        found.attempt(lambda: detect.load_truststore(found, data, secret, name))
    return found
