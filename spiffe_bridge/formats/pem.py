"""spiffe-helper's PEM layout, byte for byte: ``svid.pem``, ``svid_key.pem``, ``svid_bundle.pem``.

The SVID file is leaf then intermediates, the key one PKCS#8 ``PRIVATE KEY`` block,
the bundle the trust domain's roots (see ``_material`` for the exact order). PEM is
encoded like Go's ``pem.Encode``: 64 columns, a newline after every line.
"""

from __future__ import annotations

from collections.abc import Sequence

from spiffe_bridge._encoding import pem_block
from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import Cert, federated_specs, spec, x509_material
from spiffe_bridge.formats.options import KEY_OPTIONS, X509Options
from spiffe_bridge.x509context import X509Context


def certs_pem(certs: Sequence[Cert]) -> bytes:
    """Concatenated PEM ``CERTIFICATE`` blocks."""
    return b"".join(pem_block("CERTIFICATE", der) for _, der in certs)


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = KEY_OPTIONS | {
    "svid_file_name",
    "svid_key_file_name",
    "svid_bundle_file_name",
    "federated_dir",
}


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """SVID chain, key and bundle PEM files (plus per-trust-domain federated bundles)."""
    material = x509_material(ctx, options)
    return [
        spec(options.svid_file_name, certs_pem(material.chain), options.cert_file_mode),
        spec(options.svid_key_file_name, material.svid.key_pem, options.key_file_mode),
        spec(options.svid_bundle_file_name, certs_pem(material.bundle), options.cert_file_mode),
        *federated_specs(material, options, ".pem", certs_pem),
    ]
