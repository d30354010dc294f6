"""Real loopback handshakes with stdlib ssl contexts built from a dev agent's material."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support.pki import roots_pem
from tls_peers import (
    CLIENT_ID,
    SERVER_ID,
    TLSServer,
    connect,
    exchange,
    forge,
    material,
    plain_context,
    refused_by_server,
    serial_of,
)

from spiffe_bridge import X509Source
from spiffe_bridge.devagent import DevAgent, TrustDomainCA
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls import (
    PeerNotAuthorizedError,
    PeerRefusedError,
    SpiffeSSLContext,
    authorize_any,
    authorize_id,
    authorize_member_of,
    client_ssl_context,
    peer_spiffe_id,
    server_ssl_context,
)


@pytest.fixture
def server_ctx(source: X509Source) -> Iterator[SpiffeSSLContext]:
    with server_ssl_context(source, authorize_id(CLIENT_ID), svid_hint="server") as ctx:
        yield ctx


@pytest.fixture
def client_ctx(source: X509Source) -> Iterator[SpiffeSSLContext]:
    with client_ssl_context(source, authorize_id(SERVER_ID), svid_hint="client") as ctx:
        yield ctx


@pytest.fixture
def server(server_ctx: SpiffeSSLContext) -> Iterator[TLSServer]:
    with TLSServer(server_ctx) as srv:
        yield srv


def _serial(svid_leaf: Any) -> int:
    return int(svid_leaf.serial_number)


def test_authorized_peers_talk_and_know_each_other(
    server: TLSServer, client_ctx: SpiffeSSLContext, source: X509Source
) -> None:
    with connect(client_ctx, server.port) as tls:
        assert peer_spiffe_id(tls) == SpiffeId.parse(SERVER_ID)
        assert serial_of(tls.getpeercert(True)) == _serial(source.svid(hint="server").leaf)
        assert exchange(tls) == CLIENT_ID.encode() + b"|ping"
    seen = server.next()
    assert seen.error is None
    assert seen.peer_id == SpiffeId.parse(CLIENT_ID)
    assert seen.peer_serial == _serial(source.svid(hint="client").leaf)


def test_client_refuses_server_with_another_id(server: TLSServer, source: X509Source) -> None:
    ctx = client_ssl_context(source, authorize_id("spiffe://example.org/db"), svid_hint="client")
    with ctx, pytest.raises(PeerNotAuthorizedError) as info:
        connect(ctx, server.port)
    assert info.value.peer_id == SpiffeId.parse(SERVER_ID)
    assert str(info.value) == f"peer {SERVER_ID} is not authorized: expected spiffe://example.org/db"
    assert isinstance(info.value, ssl.SSLCertVerificationError)


def test_server_refuses_client_with_another_id(server: TLSServer, agent: DevAgent, tmp_path: Path) -> None:
    intruder = material(agent.ca.issue_x509_svid("spiffe://example.org/intruder", ttl=600))
    ctx = plain_context(tmp_path, server_side=False, mat=intruder, trust_pem=roots_pem(agent.ca))
    with connect(ctx, server.port) as tls:
        assert refused_by_server(tls)
    error = server.next().error
    assert isinstance(error, PeerNotAuthorizedError)
    assert error.peer_id == SpiffeId.parse("spiffe://example.org/intruder")
    assert str(error) == f"peer spiffe://example.org/intruder is not authorized: expected {CLIENT_ID}"


def test_client_without_certificate_is_refused(server: TLSServer, agent: DevAgent, tmp_path: Path) -> None:
    ctx = plain_context(tmp_path, server_side=False, mat=None, trust_pem=roots_pem(agent.ca))
    with connect(ctx, server.port) as tls:
        assert refused_by_server(tls)
    error = server.next().error
    assert isinstance(error, ssl.SSLError)  # OpenSSL: peer did not return a certificate


def test_peer_of_untrusted_trust_domain_is_refused(
    source: X509Source, agent: DevAgent, tmp_path: Path
) -> None:
    other = TrustDomainCA("other.org")
    stranger = material(other.issue_x509_svid("spiffe://other.org/client", ttl=600))
    with server_ssl_context(source, authorize_any(), svid_hint="server") as ctx, TLSServer(ctx) as server:
        client = plain_context(tmp_path, server_side=False, mat=stranger, trust_pem=roots_pem(agent.ca))
        with connect(client, server.port) as tls:
            assert refused_by_server(tls)
        error = server.next().error
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert "unable to get local issuer certificate" in str(error)


def test_expired_peer_is_refused(server: TLSServer, agent: DevAgent, tmp_path: Path) -> None:
    expired = forge(agent.ca, CLIENT_ID, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    client = plain_context(tmp_path, server_side=False, mat=expired, trust_pem=roots_pem(agent.ca))
    with connect(client, server.port) as tls:
        assert refused_by_server(tls)
    error = server.next().error
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert "certificate has expired" in str(error)


def test_server_with_expired_certificate_is_refused(
    client_ctx: SpiffeSSLContext, agent: DevAgent, tmp_path: Path
) -> None:
    expired = forge(agent.ca, SERVER_ID, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    ctx = plain_context(tmp_path, server_side=True, mat=expired, trust_pem=roots_pem(agent.ca))
    with TLSServer(ctx) as server, pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        connect(client_ctx, server.port)


def test_federated_root_cannot_vouch_for_another_trust_domain(
    source: X509Source, agent: DevAgent, tmp_path: Path
) -> None:
    partner = agent.add_federated_trust_domain("partner.org")
    source.wait_for(lambda c: c.bundle_for("partner.org") is not None, timeout=10)
    # partner.org's real CA signs a leaf claiming an example.org ID: OpenSSL accepts the chain
    # (partner's root is in the store), the per-trust-domain anchor check must not.
    forged = forge(partner, CLIENT_ID)
    with server_ssl_context(source, authorize_any(), svid_hint="server") as ctx, TLSServer(ctx) as server:
        ctx.wait_for(lambda c: c.bundle_for("partner.org") is not None)
        client = plain_context(tmp_path, server_side=False, mat=forged, trust_pem=roots_pem(agent.ca))
        with connect(client, server.port) as tls:
            assert refused_by_server(tls)
        error = server.next().error
    assert isinstance(error, PeerRefusedError)
    assert not isinstance(error, PeerNotAuthorizedError)
    assert error.peer_id == SpiffeId.parse(CLIENT_ID)
    assert "anchored in another trust domain" in str(error)


def test_federated_trust_domain_accepted_only_while_its_bundle_is_present(
    source: X509Source, agent: DevAgent, tmp_path: Path
) -> None:
    partner = agent.add_federated_trust_domain("partner.org")
    peer = material(partner.issue_x509_svid("spiffe://partner.org/client", ttl=600))
    client = plain_context(tmp_path, server_side=False, mat=peer, trust_pem=roots_pem(agent.ca))
    authorizer = authorize_member_of("partner.org")
    with server_ssl_context(source, authorizer, svid_hint="server") as ctx, TLSServer(ctx) as server:
        ctx.wait_for(lambda c: c.bundle_for("partner.org") is not None)
        with connect(client, server.port) as tls:
            assert exchange(tls) == b"spiffe://partner.org/client|ping"
        assert server.next().peer_id == SpiffeId.parse("spiffe://partner.org/client")

        agent.remove_federated_trust_domain("partner.org")
        ctx.wait_for(lambda c: c.bundle_for("partner.org") is None)
        with connect(client, server.port) as tls:
            assert refused_by_server(tls)
        assert isinstance(server.next().error, ssl.SSLCertVerificationError)


def test_rotation_reaches_new_connections_through_the_same_context_objects(
    server: TLSServer,
    server_ctx: SpiffeSSLContext,
    client_ctx: SpiffeSSLContext,
    agent: DevAgent,
) -> None:
    established = connect(client_ctx, server.port)
    old_server_serial = serial_of(established.getpeercert(True))
    old_client_serial = server.next().peer_serial
    assert old_server_serial == _serial(server_ctx.svid.leaf)

    rotated = {m.hint: m.serial_number for m in agent.rotate()}
    server_ctx.wait_for(lambda c: c.svid(hint="server").leaf.serial_number == rotated["server"])
    client_ctx.wait_for(lambda c: c.svid(hint="client").leaf.serial_number == rotated["client"])

    with connect(client_ctx, server.port) as tls:
        assert serial_of(tls.getpeercert(True)) == rotated["server"] != old_server_serial
        assert exchange(tls) == CLIENT_ID.encode() + b"|ping"
    assert server.next().peer_serial == rotated["client"] != old_client_serial
    assert server.context is server_ctx  # nobody rebuilt or re-installed anything
    with established:  # connections made before the rotation carry on
        assert exchange(established, b"still here") == CLIENT_ID.encode() + b"|still here"


def test_bundle_rotation_replaces_trust_instead_of_adding_to_it(
    server: TLSServer, server_ctx: SpiffeSSLContext, agent: DevAgent, tmp_path: Path
) -> None:
    old_root_client = material(agent.ca.issue_x509_svid(CLIENT_ID, ttl=600))
    old_roots_pem = roots_pem(agent.ca)
    client = plain_context(tmp_path, server_side=False, mat=old_root_client, trust_pem=old_roots_pem)
    with connect(client, server.port) as tls:
        assert exchange(tls) == CLIENT_ID.encode() + b"|ping"
    assert server.next().error is None

    old_roots = server_ctx.x509_context.bundle_for("example.org")
    agent.rotate_x509_bundle(keep_previous=False)
    server_ctx.wait_for(lambda c: c.bundle_for("example.org") != old_roots)
    # the client trusts old and new roots, so only the server's (replaced) trust can refuse it
    trust_both = old_roots_pem + roots_pem(agent.ca)
    client = plain_context(tmp_path, server_side=False, mat=old_root_client, trust_pem=trust_both)
    with connect(client, server.port) as tls:
        assert refused_by_server(tls)
    assert isinstance(server.next().error, ssl.SSLCertVerificationError)


@pytest.mark.dev_agent(intermediate=True)
def test_chains_with_intermediates(server: TLSServer, client_ctx: SpiffeSSLContext) -> None:
    with connect(client_ctx, server.port) as tls:
        assert exchange(tls) == CLIENT_ID.encode() + b"|ping"
    assert server.next().peer_id == SpiffeId.parse(CLIENT_ID)


def test_authorization_cannot_be_skipped_by_deferring_the_handshake(
    server: TLSServer, source: X509Source
) -> None:
    with client_ssl_context(source, authorize_id("spiffe://example.org/db"), svid_hint="client") as ctx:
        tls = connect(ctx, server.port, do_handshake_on_connect=False)
        with tls, pytest.raises(PeerNotAuthorizedError):
            tls.sendall(b"secret")  # implicit handshake: authorization still runs first
        with pytest.raises(OSError):
            tls.recv(10)


def test_a_failed_rebuild_keeps_the_previous_material(
    server_ctx: SpiffeSSLContext, agent: DevAgent, source: X509Source
) -> None:
    before = server_ctx.svid
    agent.set_identities([CLIENT_ID + "#client"])  # the "server" SVID disappears
    source.wait_for(lambda c: len(c.svids) == 1, timeout=10)
    agent.add_identity("spiffe://example.org/marker#marker")
    source.wait_for(lambda c: len(c.svids) == 2, timeout=10)
    assert server_ctx.generation == 1
    assert server_ctx.svid is before
    assert isinstance(server_ctx.last_error, LookupError)


def test_hostname_checks_and_unverified_peers_are_not_allowed(client_ctx: SpiffeSSLContext) -> None:
    with pytest.raises(ValueError, match="SPIFFE ID"):
        client_ctx.check_hostname = True
    with pytest.raises(ValueError, match="verify"):
        client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_REQUIRED
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED and not client_ctx.check_hostname


def test_key_files_are_private_short_lived_and_removed_on_close(
    source: X509Source, agent: DevAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        directory = os.path.dirname(certfile)
        seen.append(
            (
                stat.S_IMODE(os.stat(directory).st_mode),
                stat.S_IMODE(os.stat(certfile).st_mode),
                stat.S_IMODE(os.stat(keyfile).st_mode),
            )
        )
        original(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    ctx = server_ssl_context(source, authorize_any(), svid_hint="server")
    directory = ctx.key_directory
    serial = agent.rotate()[0].serial_number
    ctx.wait_for(lambda c: c.svid(hint="server").leaf.serial_number == serial)
    assert seen == [(0o700, 0o600, 0o600)] * 2
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.listdir(directory) == []  # key files exist only while OpenSSL reads them
    ctx.close()
    assert not os.path.exists(directory)
    ctx.close()  # idempotent
