"""Linkerd proxy (SPIRE mode): trust anchors PEM and a systemd ``EnvironmentFile``.

linkerd2-proxy reads no certificate files: it fetches its SVID from the Workload
API itself and only needs, in its environment, its SPIFFE ID, its SNI name, the
Workload API address (agent or relay) and the trust anchors as PEM *text*. Trust
anchors are read once at start, so a root change needs a proxy restart -- see
:func:`anchors_changed`.

The env file uses double quotes, which systemd (systemd.exec ``EnvironmentFile=``)
and POSIX shells both read the same way: newlines inside are kept, a backslash
escapes ``"``, ``\\``, ``$`` and backtick. PEM text contains none of these.
"""

from __future__ import annotations

import os
from pathlib import Path

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import spec, x509_material
from spiffe_bridge.formats.options import FormatError, X509Options
from spiffe_bridge.formats.pem import certs_pem
from spiffe_bridge.x509context import X509Context

SERVER_ID = "LINKERD2_PROXY_IDENTITY_SERVER_ID"
SERVER_NAME = "LINKERD2_PROXY_IDENTITY_SERVER_NAME"
WORKLOAD_API_ADDRESS = "LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS"
LEGACY_SOCKET = "LINKERD2_PROXY_IDENTITY_SPIRE_SOCKET"
TRUST_ANCHORS = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"


def quote(value: str) -> str:
    """Double-quote a value for a systemd EnvironmentFile (and for ``sh``'s ``.``)."""
    if "\0" in value:
        raise FormatError("environment values cannot contain NUL")
    escaped = "".join("\\" + ch if ch in '"\\$`' else ch for ch in value)
    return f'"{escaped}"'


def trust_anchors(ctx: X509Context, options: X509Options) -> bytes:
    """PEM of the roots the selected SVID's chain ends in (own trust domain bundle)."""
    return certs_pem(x509_material(ctx, options).own_roots)


def env_file(ctx: X509Context, options: X509Options) -> bytes:
    """The EnvironmentFile text for linkerd2-proxy in SPIRE mode."""
    material = x509_material(ctx, options)
    if not options.linkerd_server_name:
        raise FormatError("linkerd needs linkerd_server_name (the DNS name clients send as SNI)")
    address = options.linkerd_workload_api_address
    if not address:
        raise FormatError("linkerd needs linkerd_workload_api_address (the agent's or relay's socket)")
    for what, value in (("server name", options.linkerd_server_name), ("address", address)):
        if "\n" in value or "\r" in value:
            raise FormatError(f"linkerd {what} must be one line")
    lines = [
        "# linkerd2-proxy identity (SPIRE mode), written by spiffe-bridge; systemd EnvironmentFile syntax",
        f"{SERVER_ID}={quote(str(material.svid.spiffe_id))}",
        f"{SERVER_NAME}={quote(options.linkerd_server_name)}",
        f"{WORKLOAD_API_ADDRESS}={quote(address)}",
    ]
    if options.linkerd_legacy_socket_env:
        lines.append(f"{LEGACY_SOCKET}={quote(address)}")
    lines.append(f"{TRUST_ANCHORS}={quote(certs_pem(material.own_roots).decode('ascii'))}")
    return ("\n".join(lines) + "\n").encode()


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = frozenset(
    {
        "linkerd_server_name",
        "linkerd_workload_api_address",
        "linkerd_trust_anchors_file_name",
        "linkerd_env_file_name",
        "linkerd_legacy_socket_env",
    }
)


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """``trust_anchors.pem`` and ``linkerd.env`` (both public material, cert mode)."""
    return [
        spec(options.linkerd_trust_anchors_file_name, trust_anchors(ctx, options), options.cert_file_mode),
        spec(options.linkerd_env_file_name, env_file(ctx, options), options.cert_file_mode),
    ]


def anchors_changed(
    directory: str | os.PathLike[str], ctx: X509Context, options: X509Options | None = None
) -> bool:
    """True when ``ctx`` would change the trust anchors written in ``directory`` (or none exist yet).

    The proxy parses its trust anchors only at start: callers restart it when this is true.
    """
    options = options or X509Options()
    try:
        current = (Path(directory) / options.linkerd_trust_anchors_file_name).read_bytes()
    except FileNotFoundError:
        return True
    return current != trust_anchors(ctx, options)
