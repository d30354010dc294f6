"""SPIFFE Filesystem Delivery end to end with the real SPIRE agent.

``spiffe-bridge fetch --format spiffe-fs`` writes the agent's SVID as a credential
folder; ``FileX509Source`` reads it back and must hold what the agent serves (its own
bundle and the federated one, the default SVID), and a TLS server built from the
folder completes a handshake with a client that uses the Workload API directly.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from spire import SpireDeployment

from spiffe_bridge import WorkloadClient
from spiffe_bridge.cli.main import main
from spiffe_bridge.file_source import FileX509Source
from spiffe_bridge.sources import X509Source
from spiffe_bridge.tls import authorize_member_of, client_ssl_context, peer_spiffe_id, server_ssl_context

pytest_plugins = ("interop_support",)


def test_spire_svid_as_a_credential_folder_serves_tls(spire: SpireDeployment, tmp_path: Path) -> None:
    address = spire.workload_api_address
    folder = tmp_path / "creds"
    assert main(["fetch", "x509", "--address", address, "--write", str(folder), "--format", "spiffe-fs"]) == 0
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".."))
    domains = (spire.trust_domain, spire.federated_trust_domain)
    assert names == sorted(["credential-bundle.pem", *(f"{td}.spiffe-trust-bundle.pem" for td in domains)])
    with WorkloadClient(address) as client:
        api = client.fetch_x509_context()
    with FileX509Source(folder, timeout=10) as files, X509Source(address, timeout=10) as live:
        ctx = files.context
        assert dict(ctx.bundles) == dict(api.bundles)
        assert ctx.default_svid.spiffe_id == api.default_svid.spiffe_id
        member = authorize_member_of(spire.trust_domain)
        with (
            server_ssl_context(files, member) as server_ctx,
            client_ssl_context(live, member) as client_ctx,
            socket.create_server(("127.0.0.1", 0)) as listener,
        ):
            port = listener.getsockname()[1]
            seen: list[object] = []

            def serve() -> None:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    seen.append(peer_spiffe_id(tls))
                    tls.sendall(tls.recv(16))

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert peer_spiffe_id(tls) == ctx.default_svid.spiffe_id
                tls.sendall(b"ping")
                assert tls.recv(16) == b"ping"
            thread.join(10)
            assert seen == [live.svid().spiffe_id]
