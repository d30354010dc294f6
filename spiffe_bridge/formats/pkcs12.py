"""PKCS#12 keystore (key + chain) and trust store (bundle certificates only) for Java & co.

The trust store marks every certificate as trusted the way Java's keytool does
(``serialize_java_truststore``), with one alias per certificate named after its
trust domain. With a password the files use AES-256/PBKDF2. PKCS#12 output has
random salts/IDs, so the last few renders are remembered per (context digest,
options): rendering the same material again gives the same bytes and the
writer sees nothing to rewrite.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import Cert, X509Material, spec, x509_material
from spiffe_bridge.formats.options import KEY_OPTIONS, FormatError, X509Options
from spiffe_bridge.spiffeid import TrustDomain
from spiffe_bridge.x509context import X509Context

_KEY_TYPES = (
    rsa.RSAPrivateKey,
    dsa.DSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def read_password(file_name: str, env_name: str, environ: Mapping[str, str]) -> str | None:
    """The keystore password: the file's content less one line ending, else the variable's value.

    None when neither is given (or the variable is unset): the keystore is then written
    unencrypted. OSError when the file cannot be read.
    """
    if file_name:
        with open(file_name, encoding="utf-8") as fh:
            return fh.read().removesuffix("\n").removesuffix("\r")
    return environ.get(env_name) if env_name else None


def _encryption(password: str | None) -> serialization.KeySerializationEncryption:
    if not password:
        return serialization.NoEncryption()
    return serialization.BestAvailableEncryption(password.encode())


def _trusted(material: X509Material, options: X509Options) -> list[tuple[str, Cert]]:
    """(alias, certificate) for the trust store: own roots (+ moved intermediates), then federated."""
    (own_td, own), *others = material.all_bundles
    groups: list[tuple[TrustDomain, Sequence[Cert]]] = [(own_td, own)]
    if options.add_intermediates_to_bundle:
        groups.append(
            (own_td, list(zip(material.svid.intermediates, material.svid.chain_der[1:], strict=True)))
        )
    if options.include_federated_domains:
        groups += others
    out: list[tuple[str, Cert]] = []
    counts: dict[TrustDomain, int] = {}
    for td, certs in groups:
        for cert in certs:
            counts[td] = counts.get(td, 0) + 1
            out.append((f"{td.name}-{counts[td] - 1}", cert))
    return out


_CACHE_SIZE = 8
_cache: OrderedDict[tuple[bytes, X509Options], list[FileSpec]] = OrderedDict()
_cache_lock = threading.Lock()


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = KEY_OPTIONS | {
    "pkcs12_keystore_file_name",
    "pkcs12_truststore_file_name",
    "pkcs12_alias",
}


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """``svid.p12`` (key, leaf, intermediates; 0600) and ``svid_bundle.p12`` (certificates only)."""
    key = (ctx.digest, options)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return list(_cache[key])
    files = _render(ctx, options)
    with _cache_lock:
        _cache[key] = files
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return list(files)


def _render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    material = x509_material(ctx, options)
    private_key = material.svid.private_key
    if not isinstance(private_key, _KEY_TYPES):
        raise FormatError(f"PKCS#12 cannot hold a {type(private_key).__name__}")
    keystore = pkcs12.serialize_key_and_certificates(
        options.pkcs12_alias.encode(),
        private_key,
        material.chain[0][0],
        [cert for cert, _ in material.chain[1:]],
        _encryption(options.pkcs12_password),
    )
    trust_password = options.pkcs12_truststore_password
    if trust_password is None:
        trust_password = options.pkcs12_password
    truststore = pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(cert, alias.encode()) for alias, (cert, _) in _trusted(material, options)],
        _encryption(trust_password),
    )
    return [
        spec(options.pkcs12_keystore_file_name, keystore, options.key_file_mode),
        spec(options.pkcs12_truststore_file_name, truststore, options.cert_file_mode),
    ]
