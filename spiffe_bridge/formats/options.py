"""Options shared by the credential formats, with spiffe-helper's names and defaults."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from spiffe_bridge.errors import SpiffeBridgeError, SvidNotFoundError

FederatedLayout = Literal["per-trust-domain", "merged"]


class FormatError(SpiffeBridgeError, ValueError):
    """The material cannot be rendered with these options (no such SVID, missing option...)."""


class SvidSelectionError(FormatError, SvidNotFoundError):
    """The configured hint or SPIFFE ID names no SVID the agent sent: both a FormatError and a lookup miss."""


def check_key_file_mode(mode: int, allow_shared: bool, name: str = "key_file_mode") -> None:
    """Refuse a mode that lets group or others read a private key, unless explicitly allowed.

    ``key_file_mode`` covers every file that holds a private key (PEM and DER keys, the combined
    PEM, the PKCS#12 keystore, Envoy's tls_certificate). A consumer running as another user in the
    same group needs ``0640`` and says so with ``allow_shared_key_file_mode``.
    """
    if mode & 0o077 and not allow_shared:
        raise FormatError(
            f"{name} 0o{mode:o} lets group or others read the private key; use 0600 or 0400, "
            "or opt in with allow_shared_key_file_mode (fetch: --allow-shared-key-file-mode) "
            "if another user must read it"
        )


@dataclass(frozen=True)
class X509Options:
    """What to write for X.509 material and under which names; one object serves every format.

    Defaults follow spiffe-helper (``svid.pem``/``svid_key.pem``/``svid_bundle.pem``,
    certs 0644, keys 0600); a key mode with group or other bits needs
    ``allow_shared_key_file_mode`` (see ``check_key_file_mode``). Federated bundles are written only with
    ``include_federated_domains``: one file per trust domain under ``federated_dir``
    by default, or appended to the bundle file (spiffe-helper's behaviour) with
    ``federated_layout="merged"``.
    """

    # which SVID (default: the first one the agent sent)
    hint: str | None = None
    spiffe_id: str | None = None
    # pem (spiffe-helper)
    svid_file_name: str = "svid.pem"
    svid_key_file_name: str = "svid_key.pem"
    svid_bundle_file_name: str = "svid_bundle.pem"
    cert_file_mode: int = 0o644
    key_file_mode: int = 0o600
    allow_shared_key_file_mode: bool = False
    add_intermediates_to_bundle: bool = False
    include_federated_domains: bool = False
    omit_expired: bool = False
    federated_layout: FederatedLayout = "per-trust-domain"
    federated_dir: str = "federated"
    # combined (HAProxy crt, ghostunnel --keystore)
    combined_file_name: str = "svid_combined.pem"
    # envoy-sds: one DiscoveryResponse per file, secret names as SPIRE's SDS uses them
    envoy_certificate_file_name: str = "sds_tls_certificate.json"
    envoy_bundle_file_name: str = "sds_validation_context.json"
    envoy_all_bundles_file_name: str = "sds_all_bundles.json"
    envoy_certificate_secret_name: str = "default"  # noqa: S105 (a name)
    envoy_bundle_secret_name: str = "ROOTCA"  # noqa: S105 (a name)
    envoy_all_bundles_secret_name: str = "ALL"  # noqa: S105 (a name)
    envoy_spiffe_validator: bool = True
    # bundle-map (gRFC A87, gRPC xDS ``spiffe_trust_bundle_map_file``)
    bundle_map_file_name: str = "spiffe_bundle_map.json"
    # pkcs12
    pkcs12_keystore_file_name: str = "svid.p12"
    pkcs12_truststore_file_name: str = "svid_bundle.p12"
    pkcs12_password: str | None = field(default=None, repr=False)
    pkcs12_truststore_password: str | None = field(default=None, repr=False)
    pkcs12_alias: str = "spiffe"
    # der
    der_svid_file_name: str = "svid.der"
    der_chain_file_name: str = "svid_chain.der"
    der_key_file_name: str = "key.p8"
    der_bundle_file_name: str = "svid_bundle.der"
    # linkerd (SPIRE mode)
    linkerd_server_name: str | None = None
    linkerd_workload_api_address: str | None = None
    linkerd_trust_anchors_file_name: str = "trust_anchors.pem"
    linkerd_env_file_name: str = "linkerd.env"
    linkerd_legacy_socket_env: bool = False
    #: Clock for ``omit_expired`` (tests); None means now.
    now: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_key_file_mode(self.key_file_mode, self.allow_shared_key_file_mode)


#: X509Options fields every X.509 format reads: which SVID, which certificates, the certificate mode.
COMMON_OPTIONS = frozenset(
    {
        "hint",
        "spiffe_id",
        "cert_file_mode",
        "add_intermediates_to_bundle",
        "include_federated_domains",
        "federated_layout",
        "omit_expired",
    }
)
#: The options of every format that writes a private key.
KEY_OPTIONS = frozenset({"key_file_mode", "allow_shared_key_file_mode"})


@dataclass(frozen=True)
class JwtOptions:
    """Names and modes for JWT material (spiffe-helper's modes: everything 0600).

    ``jwt_bundle_file_name`` gets spiffe-helper's shape (``{"<td>": "<base64 JWKS>"}``);
    ``jwks_dir`` additionally gets one plain JWKS per trust domain (``<td>.json``).
    Set either to None to skip it.
    """

    jwt_svid_file_mode: int = 0o600
    jwt_bundle_file_name: str | None = "jwt_bundle.json"
    jwt_bundle_file_mode: int = 0o600
    jwks_dir: str | None = "jwks"
