"""Which format wrote these files, and what do they hold?

A directory is recognised by the file names our writers use (the defaults of
:class:`~spiffe_bridge.formats.X509Options` and :class:`~spiffe_bridge.formats.JwtOptions`,
plus the SPIFFE Filesystem Delivery names); a single file by its content. Each
recognised set becomes a :class:`Found`: the certificates, key, bundles, tokens
and env variables it holds, the files they came from, and what could not be read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from spiffe_bridge.credential_folder import CREDENTIAL_BUNDLE as SPIFFE_FS_CREDENTIAL_BUNDLE
from spiffe_bridge.credential_folder import TRUST_BUNDLE_SUFFIX as SPIFFE_FS_TRUST_BUNDLE_SUFFIX
from spiffe_bridge.formats import X509Options
from spiffe_bridge.formats import linkerd as linkerd_format
from spiffe_bridge.inspect.readers import (
    ReadError,
    der_certs,
    inline,
    load_key,
    parse_env_file,
    pem_blocks,
    pem_certs,
    read_bytes,
    sds_secret,
)
from spiffe_bridge.jwtbundle import JwtBundleSet

#: Key for the bundle of the leaf's own trust domain when the files do not name it.
OWN = ""
_X509 = X509Options()


@dataclass
class Found:
    """One recognised file set and what it holds (certificates parsed, nothing validated)."""

    format: str
    paths: list[str] = field(default_factory=list)
    #: files holding a private key (mode checks are stricter for them)
    key_paths: list[str] = field(default_factory=list)
    chain: list[x509.Certificate] = field(default_factory=list)
    key: PrivateKeyTypes | None = field(default=None, repr=False)
    #: trust domain name (or OWN) -> authorities
    bundles: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    #: (file, compact JWS)
    tokens: list[tuple[str, str]] = field(default_factory=list, repr=False)
    jwt_bundles: JwtBundleSet | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: SDS secret names by file
    secret_names: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: False for a single inspected file: missing companions (key, bundle) are not its fault
    complete: bool = True

    def read(self, path: str, key: bool = False) -> bytes | None:
        """Read ``path`` into this set, recording it (and a problem if it cannot be read)."""
        self.paths.append(path)
        if key:
            self.key_paths.append(path)
        try:
            return read_bytes(path)
        except ReadError as exc:
            self.problems.append(str(exc))
            return None

    def attempt(self, step: Callable[..., object], *args: Any) -> None:
        """Run a parse step; a ReadError becomes a problem instead of ending the inspection."""
        try:
            step(*args)
        except ReadError as exc:
            self.problems.append(str(exc))


def _exists(directory: str, name: str) -> bool:
    return os.path.lexists(os.path.join(directory, name))


def _federated(found: Found, directory: str, extension: str) -> None:
    fed = os.path.join(directory, _X509.federated_dir)
    if not os.path.isdir(fed):
        return
    for name in sorted(os.listdir(fed)):
        if name.endswith(extension):
            path = os.path.join(fed, name)
            data = found.read(path)
            parse = pem_certs if extension == ".pem" else der_certs
            if data is not None:
                found.attempt(add_bundle, found, name[: -len(extension)], parse, data, path)


def add_bundle(
    found: Found, td: str, parse: Callable[[bytes, str], list[x509.Certificate]], data: bytes, what: str
) -> None:
    """Parse ``data`` as the bundle of ``td`` (OWN: the leaf's trust domain)."""
    found.bundles[td] = parse(data, what)


def key_and_certs(found: Found, data: bytes, path: str, key_first: bool) -> None:
    blocks, stray = pem_blocks(data)
    if stray:
        found.problems.append(f"{path}: data between or around the PEM blocks")
    if any(b.has_headers for b in blocks):
        found.problems.append(f"{path}: PEM blocks carry headers")
    keys = [b for b in blocks if b.label == "PRIVATE KEY"]
    others = [b.label for b in blocks if b.label not in ("PRIVATE KEY", "CERTIFICATE")]
    if len(keys) != 1 or others:
        raise ReadError(
            f"{path}: expected one PRIVATE KEY block and CERTIFICATE blocks, found {others or len(keys)}"
        )
    if key_first and blocks[0].label != "PRIVATE KEY":
        found.problems.append(f"{path}: the PRIVATE KEY block must come first")
    found.key = load_key(keys[0].der, path)
    found.chain = pem_certs(b"".join(_reencode(b.der) for b in blocks if b.label == "CERTIFICATE"), path)


def _reencode(der: bytes) -> bytes:
    from spiffe_bridge._encoding import pem_block

    return pem_block("CERTIFICATE", der)


def load_pem(directory: str) -> Found:
    found = Found("pem")
    chain = found.read(os.path.join(directory, _X509.svid_file_name))
    key = found.read(os.path.join(directory, _X509.svid_key_file_name), key=True)
    bundle = found.read(os.path.join(directory, _X509.svid_bundle_file_name))
    if chain is not None:
        found.attempt(lambda: setattr(found, "chain", pem_certs(chain, _X509.svid_file_name)))
    if key is not None:
        found.attempt(lambda: _pem_key(found, key, _X509.svid_key_file_name))
    if bundle is not None:
        found.attempt(add_bundle, found, OWN, pem_certs, bundle, _X509.svid_bundle_file_name)
    _federated(found, directory, ".pem")
    return found


def _pem_key(found: Found, data: bytes, what: str) -> None:
    blocks, _ = pem_blocks(data)
    if len(blocks) != 1 or blocks[0].label != "PRIVATE KEY":
        raise ReadError(f"{what}: expected exactly one PRIVATE KEY block")
    found.key = load_key(blocks[0].der, what)


def load_combined(directory: str) -> Found:
    found = Found("combined")
    data = found.read(os.path.join(directory, _X509.combined_file_name), key=True)
    if data is not None:
        found.attempt(lambda: key_and_certs(found, data, _X509.combined_file_name, key_first=False))
    bundle_path = os.path.join(directory, _X509.svid_bundle_file_name)
    if os.path.lexists(bundle_path):
        bundle = found.read(bundle_path)
        if bundle is not None:
            found.attempt(add_bundle, found, OWN, pem_certs, bundle, _X509.svid_bundle_file_name)
    _federated(found, directory, ".pem")
    return found


def load_der(directory: str) -> Found:
    found = Found("der")
    chain = found.read(os.path.join(directory, _X509.der_chain_file_name))
    key = found.read(os.path.join(directory, _X509.der_key_file_name), key=True)
    bundle = found.read(os.path.join(directory, _X509.der_bundle_file_name))
    if chain is not None:
        found.attempt(lambda: setattr(found, "chain", der_certs(chain, _X509.der_chain_file_name)))
    if key is not None:
        found.attempt(lambda: setattr(found, "key", load_key(key, _X509.der_key_file_name)))
    if bundle is not None:
        found.attempt(add_bundle, found, OWN, der_certs, bundle, _X509.der_bundle_file_name)
    _federated(found, directory, ".der")
    return found


def load_spiffe_fs(directory: str) -> Found:
    found = Found("spiffe-fs")
    data = found.read(os.path.join(directory, SPIFFE_FS_CREDENTIAL_BUNDLE), key=True)
    if data is not None:
        found.attempt(lambda: key_and_certs(found, data, SPIFFE_FS_CREDENTIAL_BUNDLE, key_first=True))
    names = sorted(n for n in os.listdir(directory) if n.endswith(SPIFFE_FS_TRUST_BUNDLE_SUFFIX))
    if not names:
        found.problems.append(f"{directory}: no <trust-domain>{SPIFFE_FS_TRUST_BUNDLE_SUFFIX} file")
    for name in names:
        bundle = found.read(os.path.join(directory, name))
        if bundle is not None:
            td = name[: -len(SPIFFE_FS_TRUST_BUNDLE_SUFFIX)]
            found.attempt(add_bundle, found, td, pem_certs, bundle, name)
    return found


def load_pkcs12(directory: str, password: str | None = None) -> Found:
    found = Found("pkcs12")
    secret = password.encode() if password else None
    keystore = found.read(os.path.join(directory, _X509.pkcs12_keystore_file_name), key=True)
    if keystore is not None:
        found.attempt(lambda: load_keystore(found, keystore, secret, _X509.pkcs12_keystore_file_name))
    trust_path = os.path.join(directory, _X509.pkcs12_truststore_file_name)
    if os.path.lexists(trust_path):
        trust = found.read(trust_path)
        if trust is not None:
            found.attempt(lambda: load_truststore(found, trust, secret, _X509.pkcs12_truststore_file_name))
    return found


def open_p12(data: bytes, password: bytes | None, what: str) -> pkcs12.PKCS12KeyAndCertificates:
    try:
        return pkcs12.load_pkcs12(data, password)
    except ValueError:
        hint = (
            "wrong password" if password else "encrypted? pass --pkcs12-password-file/--pkcs12-password-env"
        )
        raise ReadError(f"{what}: cannot open the PKCS#12 file ({hint})") from None


def load_keystore(found: Found, data: bytes, password: bytes | None, what: str) -> None:
    store = open_p12(data, password, what)
    if store.key is None or store.cert is None:
        raise ReadError(f"{what}: keystore holds no private key and certificate")
    found.key = store.key
    found.chain = [store.cert.certificate, *(c.certificate for c in store.additional_certs)]


def load_truststore(found: Found, data: bytes, password: bytes | None, what: str) -> None:
    store = open_p12(data, password, what)
    for item in store.additional_certs:
        alias = (item.friendly_name or b"").decode(errors="replace")
        td = alias.rpartition("-")[0] if "-" in alias else OWN
        found.bundles.setdefault(td, []).append(item.certificate)


def load_envoy(directory: str) -> Found:
    found = Found("envoy-sds")
    for name in (
        _X509.envoy_certificate_file_name,
        _X509.envoy_bundle_file_name,
        _X509.envoy_all_bundles_file_name,
    ):
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            found.problems.append(f"{path}: missing")
            continue
        is_cert = name == _X509.envoy_certificate_file_name
        data = found.read(path, key=is_cert)
        if data is not None:
            found.attempt(envoy_secret, found, data, name, path)
    return found


def envoy_secret(found: Found, data: bytes, what: str, path: str) -> None:
    """Add one SDS Secret (certificate or validation context) to ``found``."""
    secret = sds_secret(data, what)
    found.secret_names[path] = str(secret.get("name", ""))
    if "tls_certificate" in secret:
        tls = secret["tls_certificate"]
        found.chain = pem_certs(inline(tls.get("certificate_chain"), what), what)
        key_pem = inline(tls.get("private_key"), what)
        _pem_key(found, key_pem, what)
        return
    context = secret.get("validation_context")
    if not isinstance(context, dict):
        raise ReadError(f"{what}: Secret has neither tls_certificate nor validation_context")
    if "trusted_ca" in context:
        found.bundles.setdefault(OWN, pem_certs(inline(context["trusted_ca"], what), what))
        return
    typed = context.get("custom_validator_config", {}).get("typed_config", {})
    for domain in typed.get("trust_domains", []):
        td = str(domain.get("name", ""))
        found.bundles.setdefault(td, pem_certs(inline(domain.get("trust_bundle"), what), f"{what} ({td})"))


def load_linkerd(directory: str) -> Found:
    found = Found("linkerd")
    env = found.read(os.path.join(directory, _X509.linkerd_env_file_name))
    if env is not None:
        found.attempt(lambda: linkerd_env(found, env, _X509.linkerd_env_file_name))
    anchors_path = os.path.join(directory, _X509.linkerd_trust_anchors_file_name)
    anchors = found.read(anchors_path) if os.path.lexists(anchors_path) else None
    in_env = found.env.get(linkerd_format.TRUST_ANCHORS)
    if anchors is not None and in_env is not None and anchors.decode(errors="replace") != in_env:
        found.problems.append(
            f"{_X509.linkerd_trust_anchors_file_name} differs from {linkerd_format.TRUST_ANCHORS} in "
            f"{_X509.linkerd_env_file_name}: the proxy reads the env file; restart it after a root change"
        )
    return found


def load_bundle_map(directory: str) -> Found:
    """gRFC A87's bundle map: every trust domain's SPIFFE bundle (JWKS), X.509 authorities only."""
    found = Found("bundle-map")
    data = found.read(os.path.join(directory, _X509.bundle_map_file_name))
    if data is not None:
        found.attempt(bundle_map, found, data, _X509.bundle_map_file_name)
    return found


def bundle_map(found: Found, data: bytes, what: str) -> None:
    """Each ``trust_domains`` entry's ``x509-svid`` keys (one ``x5c`` certificate each) become its bundle."""
    import base64
    import binascii
    import json

    try:
        doc = json.loads(data)
        domains = doc["trust_domains"]
        for td, jwks in domains.items():
            ders = [
                base64.b64decode(key["x5c"][0], validate=True)
                for key in jwks.get("keys", [])
                if key.get("use") == "x509-svid"
            ]
            found.bundles[td] = der_certs(b"".join(ders), f"{what} {td}")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, binascii.Error) as exc:
        raise ReadError(f"{what}: not a SPIFFE bundle map ({type(exc).__name__}: {exc})") from None
    if not domains:
        found.problems.append(f"{what}: no trust domains")


def linkerd_env(found: Found, data: bytes, what: str) -> None:
    """Parse a linkerd env file; its trust anchors become the bundle of SERVER_ID's trust domain."""
    found.env = parse_env_file(data.decode("utf-8", errors="replace"), what)
    anchors = found.env.get(linkerd_format.TRUST_ANCHORS)
    if anchors is None:
        raise ReadError(f"{what}: no {linkerd_format.TRUST_ANCHORS}")
    server_id = found.env.get(linkerd_format.SERVER_ID, "")
    td = server_id.removeprefix("spiffe://").partition("/")[0]
    found.bundles[td or OWN] = pem_certs(anchors.encode(), f"{what} {linkerd_format.TRUST_ANCHORS}")


#: (format, marker file names any of which means "this format is here", loader)
DIRECTORY_FORMATS: tuple[tuple[str, tuple[str, ...], Callable[[str], Found]], ...] = (
    ("pem", (_X509.svid_file_name, _X509.svid_key_file_name), load_pem),
    ("combined", (_X509.combined_file_name,), load_combined),
    ("envoy-sds", (_X509.envoy_certificate_file_name, _X509.envoy_bundle_file_name), load_envoy),
    ("der", (_X509.der_chain_file_name, _X509.der_key_file_name), load_der),
    ("linkerd", (_X509.linkerd_env_file_name,), load_linkerd),
    ("spiffe-fs", (SPIFFE_FS_CREDENTIAL_BUNDLE,), load_spiffe_fs),
    ("bundle-map", (_X509.bundle_map_file_name,), load_bundle_map),
)


def detect_directory(directory: str, pkcs12_password: str | None = None) -> list[Found]:
    """Every format whose files are in ``directory`` (empty when none is)."""
    out = [
        load(directory)
        for _, markers, load in DIRECTORY_FORMATS
        if any(_exists(directory, m) for m in markers)
    ]
    if _exists(directory, _X509.pkcs12_keystore_file_name):
        out.append(load_pkcs12(directory, pkcs12_password))
    from spiffe_bridge.inspect.jwt_files import load_jwt

    jwt = load_jwt(directory)
    if jwt.tokens or jwt.jwt_bundles is not None or jwt.problems:
        out.append(jwt)
    return out
