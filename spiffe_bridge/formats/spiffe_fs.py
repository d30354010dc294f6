"""The SPIFFE Filesystem Delivery layout (draft): one credential bundle, one trust bundle per domain.

``credential-bundle.pem`` holds the PKCS#8 ``PRIVATE KEY`` block first, then the
chain leaf to root, with no PEM headers and nothing between blocks; it carries
the key, so it gets the key's mode (0600). Every trust domain the agent sent, own
and federated, gets its own ``<trust-domain>.spiffe-trust-bundle.pem``: the
draft forbids merging them. The names are the standard's, so they are not
options; ``add_intermediates_to_bundle`` and ``include_federated_domains`` do not
apply (the chain keeps its intermediates, every trust domain is written).
Written as one set, a reader sees either the old or the new folder.
"""

from __future__ import annotations

import dataclasses

from spiffe_bridge.credential_folder import CREDENTIAL_BUNDLE, TRUST_BUNDLE_SUFFIX
from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import spec, x509_material
from spiffe_bridge.formats.options import KEY_OPTIONS, X509Options
from spiffe_bridge.formats.pem import certs_pem
from spiffe_bridge.x509context import X509Context

__all__ = ["CREDENTIAL_BUNDLE", "TRUST_BUNDLE_SUFFIX", "render"]


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = KEY_OPTIONS


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """The credential bundle (key, then leaf..intermediates) and one trust bundle per trust domain."""
    material = x509_material(ctx, dataclasses.replace(options, add_intermediates_to_bundle=False))
    credential = material.svid.key_pem + certs_pem(material.chain)
    files = [spec(CREDENTIAL_BUNDLE, credential, options.key_file_mode)]
    for td, certs in material.all_bundles:
        if certs:  # an empty trust bundle file would be invalid; no file means "not federated"
            files.append(spec(f"{td.name}{TRUST_BUNDLE_SUFFIX}", certs_pem(certs), options.cert_file_mode))
    return files
