"""envoy-sds: DiscoveryResponse files whose field names follow Envoy's v3 protos (digest §7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _support.pki import certs_pem
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from writers_pki import Pki

from spiffe_bridge.formats import X509Options, render_x509
from spiffe_bridge.formats.envoy_sds import SECRET_TYPE, SPIFFE_VALIDATOR_TYPE

# field names of the v3 messages involved (envoy/service/discovery/v3/discovery.proto,
# extensions/transport_sockets/tls/v3/secret.proto, common.proto, config/core/v3/base.proto)
DISCOVERY_RESPONSE = {
    "version_info",
    "resources",
    "canary",
    "type_url",
    "nonce",
    "control_plane",
    "resource_errors",
}
SECRET_ONEOF = {"tls_certificate", "session_ticket_keys", "validation_context", "generic_secret"}
TLS_CERTIFICATE = {"certificate_chain", "private_key", "password", "ocsp_staple", "private_key_provider",
                   "watched_directory", "pkcs12", "signed_certificate_timestamp"}  # fmt: skip
VALIDATION_CONTEXT = {"trusted_ca", "crl", "custom_validator_config", "match_typed_subject_alt_names",
                      "watched_directory", "verify_certificate_spki", "verify_certificate_hash"}  # fmt: skip
DATA_SOURCE = {"filename", "inline_bytes", "inline_string", "environment_variable"}
TYPED_EXTENSION_CONFIG = {"name", "typed_config"}


def load(pki: Pki, **options: Any) -> dict[str, tuple[dict[str, Any], int]]:
    files = render_x509("envoy-sds", pki.context(), X509Options(**options))
    return {f.name: (json.loads(f.data), f.mode) for f in files}


def only_secret(doc: dict[str, Any]) -> dict[str, Any]:
    assert set(doc) <= DISCOVERY_RESPONSE
    assert doc["type_url"] == SECRET_TYPE
    assert isinstance(doc["version_info"], str) and doc["version_info"]
    (secret,) = doc["resources"]  # Envoy's SDS wants exactly one resource per file
    assert secret["@type"] == SECRET_TYPE
    assert set(secret) - {"@type", "name"} <= SECRET_ONEOF
    assert len(set(secret) & SECRET_ONEOF) == 1
    return dict(secret)


def inline(source: dict[str, Any]) -> bytes:
    assert set(source) == {"inline_string"} and set(source) <= DATA_SOURCE
    return str(source["inline_string"]).encode()


def spiffe_domains(context: dict[str, Any]) -> dict[str, bytes]:
    assert set(context) == {"custom_validator_config"}
    config = context["custom_validator_config"]
    assert set(config) == TYPED_EXTENSION_CONFIG
    assert config["name"] == "envoy.tls.cert_validator.spiffe"
    typed = config["typed_config"]
    assert typed["@type"] == SPIFFE_VALIDATOR_TYPE and set(typed) == {"@type", "trust_domains"}
    names = [d["name"] for d in typed["trust_domains"]]
    assert names == sorted(names)
    return {d["name"]: inline(d["trust_bundle"]) for d in typed["trust_domains"]}


def test_tls_certificate_secret(pki: Pki) -> None:
    docs = load(pki)
    doc, mode = docs["sds_tls_certificate.json"]
    secret = only_secret(doc)
    assert secret["name"] == "default" and mode == 0o600
    tls = secret["tls_certificate"]
    assert set(tls) <= TLS_CERTIFICATE and set(tls) == {"certificate_chain", "private_key"}
    chain = x509.load_pem_x509_certificates(inline(tls["certificate_chain"]))
    assert [c.serial_number for c in chain] == [c.serial_number for c in pki.issued[-1].chain]
    key = serialization.load_pem_private_key(inline(tls["private_key"]), None)
    assert key.public_key() == chain[0].public_key()


def test_validation_contexts_use_the_spiffe_validator(pki: Pki) -> None:
    docs = load(pki)
    rootca = only_secret(docs["sds_validation_context.json"][0])
    assert rootca["name"] == "ROOTCA" and set(rootca["validation_context"]) <= VALIDATION_CONTEXT
    assert spiffe_domains(rootca["validation_context"]) == {"example.org": certs_pem(pki.ca.roots)}
    everything = only_secret(docs["sds_all_bundles.json"][0])
    assert everything["name"] == "ALL"
    assert spiffe_domains(everything["validation_context"]) == {
        "another.test": certs_pem(pki.federated[1].roots),
        "example.org": certs_pem(pki.ca.roots),
        "partner.test": certs_pem(pki.federated[0].roots),
    }


def test_plain_trusted_ca_and_custom_names(pki: Pki) -> None:
    docs = load(
        pki,
        envoy_spiffe_validator=False,
        envoy_certificate_secret_name="svid",
        envoy_bundle_secret_name="bundle",
        envoy_certificate_file_name="svid.json",
        envoy_bundle_file_name="bundle.json",
    )
    assert only_secret(docs["svid.json"][0])["name"] == "svid"
    bundle = only_secret(docs["bundle.json"][0])
    assert bundle["name"] == "bundle"
    assert set(bundle["validation_context"]) == {"trusted_ca"}
    assert inline(bundle["validation_context"]["trusted_ca"]) == certs_pem(pki.ca.roots)


def test_output_is_stable_for_the_same_material(pki: Pki) -> None:
    ctx = pki.context()
    first = render_x509("envoy-sds", ctx, X509Options())
    assert first == render_x509("envoy-sds", ctx, X509Options())
    changed = render_x509("envoy-sds", pki.context(), X509Options())
    assert json.loads(first[0].data)["version_info"] != json.loads(changed[0].data)["version_info"]


@pytest.mark.parametrize("name", ["sds_tls_certificate.json", "sds_validation_context.json"])
def test_files_are_pretty_json_with_trailing_newline(pki: Pki, name: str) -> None:
    data = {f.name: f.data for f in render_x509("envoy-sds", pki.context(), X509Options())}[name]
    assert data.endswith(b"}\n") and data.startswith(b"{\n")
