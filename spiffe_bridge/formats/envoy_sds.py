"""Envoy file-based SDS: one ``DiscoveryResponse`` JSON file per Secret, PEM inline.

Inline PEM (``inline_string``) means the file itself is the whole update, so
replacing it by rename is atomic for Envoy, which watches the path for moves.
Secret names default to SPIRE's SDS names: ``default`` (the SVID), ``ROOTCA``
(own trust domain) and ``ALL`` (every trust domain, SPIFFE validator). Like SPIRE,
validation contexts use Envoy's SPIFFE certificate validator unless
``envoy_spiffe_validator`` is False (then ``ROOTCA`` is a plain ``trusted_ca``).
The chain always carries the intermediates and ``ALL`` always every trust domain
(as SPIRE serves them): ``add_intermediates_to_bundle`` and
``include_federated_domains`` do not apply here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import Cert, spec, x509_material
from spiffe_bridge.formats.options import KEY_OPTIONS, X509Options
from spiffe_bridge.formats.pem import certs_pem
from spiffe_bridge.spiffeid import TrustDomain
from spiffe_bridge.x509context import X509Context

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105
SPIFFE_VALIDATOR = "envoy.tls.cert_validator.spiffe"
SPIFFE_VALIDATOR_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
)


def _inline(data: bytes) -> dict[str, str]:
    return {"inline_string": data.decode("ascii")}


def _spiffe_validator(bundles: Sequence[tuple[TrustDomain, Sequence[Cert]]]) -> dict[str, Any]:
    domains = [{"name": td.name, "trust_bundle": _inline(certs_pem(certs))} for td, certs in bundles if certs]
    return {
        "custom_validator_config": {
            "name": SPIFFE_VALIDATOR,
            "typed_config": {"@type": SPIFFE_VALIDATOR_TYPE, "trust_domains": domains},
        }
    }


def discovery_response(secret: dict[str, Any]) -> bytes:
    """A DiscoveryResponse holding exactly one Secret; ``version_info`` is a content hash."""
    resource = {"@type": SECRET_TYPE, **secret}
    body = json.dumps(resource, sort_keys=True).encode()
    doc = {
        "version_info": hashlib.sha256(body).hexdigest()[:16],
        "type_url": SECRET_TYPE,
        "resources": [resource],
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = KEY_OPTIONS | {
    "envoy_certificate_file_name",
    "envoy_bundle_file_name",
    "envoy_all_bundles_file_name",
    "envoy_certificate_secret_name",
    "envoy_bundle_secret_name",
    "envoy_all_bundles_secret_name",
    "envoy_spiffe_validator",
}


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """The tls_certificate secret (0600, holds the key) and the two validation-context secrets."""
    material = x509_material(ctx, options)
    certificate = {
        "name": options.envoy_certificate_secret_name,
        "tls_certificate": {
            "certificate_chain": _inline(material.svid.chain_pem),
            "private_key": _inline(material.svid.key_pem),
        },
    }
    own_td = material.svid.spiffe_id.trust_domain
    if options.envoy_spiffe_validator:
        own_context = _spiffe_validator([(own_td, material.own_roots)])
    else:
        own_context = {"trusted_ca": _inline(certs_pem(material.own_roots))}
    rootca = {"name": options.envoy_bundle_secret_name, "validation_context": own_context}
    everything = sorted(material.all_bundles, key=lambda item: item[0].name)
    all_bundles = {
        "name": options.envoy_all_bundles_secret_name,
        "validation_context": _spiffe_validator(everything),
    }
    return [
        spec(options.envoy_certificate_file_name, discovery_response(certificate), options.key_file_mode),
        spec(options.envoy_bundle_file_name, discovery_response(rootca), options.cert_file_mode),
        spec(options.envoy_all_bundles_file_name, discovery_response(all_bundles), options.cert_file_mode),
    ]
