"""One PEM holding chain and key (HAProxy ``crt``, ghostunnel ``--keystore``) plus the CA file.

The combined file is ``cat svid.pem svid_key.pem``: leaf, intermediates, then the
``PRIVATE KEY`` block; it carries the key, so it gets the key's mode (0600).
"""

from __future__ import annotations

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import federated_specs, spec, x509_material
from spiffe_bridge.formats.options import KEY_OPTIONS, X509Options
from spiffe_bridge.formats.pem import certs_pem
from spiffe_bridge.x509context import X509Context

#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = KEY_OPTIONS | {"combined_file_name", "svid_bundle_file_name", "federated_dir"}


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """Combined chain+key file and the bundle file (plus per-trust-domain federated bundles)."""
    material = x509_material(ctx, options)
    combined = certs_pem(material.chain) + material.svid.key_pem
    return [
        spec(options.combined_file_name, combined, options.key_file_mode),
        spec(options.svid_bundle_file_name, certs_pem(material.bundle), options.cert_file_mode),
        *federated_specs(material, options, ".pem", certs_pem),
    ]
