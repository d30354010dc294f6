"""Binary DER files: leaf, chain, PKCS#8 key (``key.p8``, Linkerd's name) and bundle.

Chains and bundles are concatenated DER, the Workload API's own encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import Cert, federated_specs, spec, x509_material
from spiffe_bridge.formats.options import KEY_OPTIONS, X509Options
from spiffe_bridge.x509context import X509Context


def certs_der(certs: Sequence[Cert]) -> bytes:
    """Concatenated DER certificates."""
    return b"".join(der for _, der in certs)


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = KEY_OPTIONS | {
    "der_svid_file_name",
    "der_chain_file_name",
    "der_key_file_name",
    "der_bundle_file_name",
    "federated_dir",
}


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """``svid.der`` (leaf), ``svid_chain.der``, ``key.p8`` and ``svid_bundle.der``."""
    material = x509_material(ctx, options)
    return [
        spec(options.der_svid_file_name, material.svid.chain_der[0], options.cert_file_mode),
        spec(options.der_chain_file_name, certs_der(material.chain), options.cert_file_mode),
        spec(options.der_key_file_name, material.svid.key_der, options.key_file_mode),
        spec(options.der_bundle_file_name, certs_der(material.bundle), options.cert_file_mode),
        *federated_specs(material, options, ".der", certs_der),
    ]
