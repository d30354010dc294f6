"""FileX509Source and its async twin: a credential folder feeds the TLS helpers like the Workload API.

Folders are written by the production spiffe-fs writer (symlink layout: one atomic
swap per rotation). Rotation is observed through the source's own wait_for, and
bad folders through its rejected counter; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from _support.pki import svid_message
from _support.wait import wait_until
from tls_peers import CLIENT_ID, SERVER_ID, TLSServer, connect, exchange, serial_of

from spiffe_bridge import credential_folder
from spiffe_bridge._encoding import pem_block
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.credential_folder import CredentialFolderError
from spiffe_bridge.devagent import DevAgent, TrustDomainCA
from spiffe_bridge.file_source import AsyncFileX509Source, FileX509Source, async_x509_source, x509_source
from spiffe_bridge.fileset import FileSetWriter, FileSpec
from spiffe_bridge.formats import X509Options, render_x509
from spiffe_bridge.sources import AsyncX509Source, X509Source
from spiffe_bridge.tls import authorize_id, client_ssl_context, server_ssl_context
from spiffe_bridge.x509context import X509Context

DEADLINE = 20.0


class Issuer:
    """Writes spiffe-fs folders for SVIDs of one CA (federated with ``partners``)."""

    def __init__(self, ca: TrustDomainCA, *partners: TrustDomainCA) -> None:
        self.ca, self.partners = ca, partners

    def context(self, spiffe_id: str) -> X509Context:
        svid = svid_message(self.ca, spiffe_id, dns=("localhost",))
        federated = {p.id: p.bundle_der() for p in self.partners}
        return decode_x509_context(pb.X509SVIDResponse(svids=[svid], federated_bundles=federated))

    def write(self, folder: Path, spiffe_id: str) -> int:
        ctx = self.context(spiffe_id)
        FileSetWriter(folder).write(render_x509("spiffe-fs", ctx, X509Options()))
        return int(ctx.default_svid.leaf.serial_number)


@pytest.fixture(params=["inotify", "polling"])
def watching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with inotify, and again with the polling fallback (asyncinotify hidden)."""
    if request.param == "polling":
        monkeypatch.setitem(sys.modules, "asyncinotify", None)
    else:
        pytest.importorskip("asyncinotify")
    return str(request.param)


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(TrustDomainCA("example.org", intermediate=True), TrustDomainCA("partner.test"))


def open_source(folder: Path, watching: str) -> FileX509Source:
    return FileX509Source(folder, timeout=10, poll_interval=0.05 if watching == "polling" else 5.0)


def test_tls_helpers_work_unchanged_and_follow_rotations(
    issuer: Issuer, tmp_path: Path, watching: str
) -> None:
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    issuer.write(server_dir, SERVER_ID)
    issuer.write(client_dir, CLIENT_ID)
    with (
        open_source(server_dir, watching) as server_source,
        open_source(client_dir, watching) as client_source,
        server_ssl_context(server_source, authorize_id(CLIENT_ID)) as server_ctx,
        client_ssl_context(client_source, authorize_id(SERVER_ID)) as client_ctx,
        TLSServer(server_ctx) as server,
    ):
        assert server_source.status.value == "ready"
        assert str(server_source.svid().spiffe_id) == SERVER_ID
        assert server_source.bundle_for("partner.test") is not None
        with connect(client_ctx, server.port) as tls:
            assert serial_of(tls.getpeercert(True)) == server_source.svid().leaf.serial_number
            assert exchange(tls) == CLIENT_ID.encode() + b"|ping"
        assert server.next().error is None

        rotated = issuer.write(server_dir, SERVER_ID)
        server_ctx.wait_for(lambda c: c.default_svid.leaf.serial_number == rotated)
        with connect(client_ctx, server.port) as tls:
            assert serial_of(tls.getpeercert(True)) == rotated
        assert server.next().error is None
        assert server_source.state.updates == 2 and server_source.state.rejected == 0


def test_a_bad_folder_never_replaces_the_good_context(issuer: Issuer, tmp_path: Path, watching: str) -> None:
    issuer.write(tmp_path, SERVER_ID)
    with open_source(tmp_path, watching) as source:
        good = source.svid().leaf.serial_number
        writer = FileSetWriter(tmp_path)
        bundle = (tmp_path / "example.org.spiffe-trust-bundle.pem").read_bytes()
        broken = (tmp_path / "credential-bundle.pem").read_bytes().replace(b"PRIVATE KEY", b"RSA PRIVATE KEY")
        writer.write(
            [
                FileSpec("credential-bundle.pem", broken, 0o600),
                FileSpec("example.org.spiffe-trust-bundle.pem", bundle, 0o644),
            ]
        )
        wait_until(lambda: source.state.rejected >= 1, "the broken folder to be rejected", DEADLINE)
        assert source.svid().leaf.serial_number == good
        assert "PRIVATE KEY" in str(source.last_error)
        rotated = issuer.write(tmp_path, SERVER_ID)
        source.wait_for(lambda c: c.default_svid.leaf.serial_number == rotated, timeout=DEADLINE)


def test_defederation_drops_the_trust_domain(issuer: Issuer, tmp_path: Path, watching: str) -> None:
    issuer.write(tmp_path, SERVER_ID)
    with open_source(tmp_path, watching) as source:
        assert source.bundle_for("partner.test") is not None
        Issuer(issuer.ca).write(tmp_path, SERVER_ID)
        source.wait_for(lambda c: c.bundle_for("partner.test") is None, timeout=DEADLINE)


def test_folder_rules(issuer: Issuer, tmp_path: Path) -> None:
    ctx = issuer.context(SERVER_ID)
    svid = ctx.default_svid
    key = pem_block("PRIVATE KEY", svid.key_der)
    chain = b"".join(pem_block("CERTIFICATE", d) for d in svid.chain_der)
    root = issuer.ca.bundle_der()
    (tmp_path / "example.org.spiffe-trust-bundle.pem").write_bytes(pem_block("CERTIFICATE", root))
    cred = tmp_path / "credential-bundle.pem"

    cred.write_bytes(key + chain + pem_block("CERTIFICATE", root))  # the chain may end with its root
    assert credential_folder.read(tmp_path).default_svid.chain_der == svid.chain_der
    for bad, why in (
        (chain + key, "PRIVATE KEY block followed by"),
        (key + b"junk\n" + chain, "data outside PEM blocks"),
        (key.replace(b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\n", 1) + chain, "PEM headers"),
        (key, "PRIVATE KEY block followed by"),
    ):
        cred.write_bytes(bad)
        with pytest.raises(credential_folder.ValidationError, match=why):
            credential_folder.read(tmp_path)
    cred.write_bytes(key + chain)
    (tmp_path / "example.org.spiffe-trust-bundle.pem").unlink()
    with pytest.raises(credential_folder.ValidationError, match="own trust domain"):
        credential_folder.read(tmp_path)


def test_locate_follows_the_draft_order(tmp_path: Path) -> None:
    first, second = tmp_path / "run", tmp_path / "var-run"
    second.mkdir()
    (second / "credential-bundle.pem").write_bytes(b"")
    defaults = (first, second)
    assert credential_folder.locate("/explicit", {"SPIFFE_CREDENTIAL_FOLDER": "/env"}, defaults) == Path(
        "/explicit"
    )
    assert credential_folder.locate(None, {"SPIFFE_CREDENTIAL_FOLDER": "/env"}, defaults) == Path("/env")
    assert credential_folder.locate(None, {}, defaults) == second
    first.mkdir()
    (first / "credential-bundle.pem").write_bytes(b"")
    assert credential_folder.locate(None, {}, defaults) == first
    assert credential_folder.locate(None, {}, (tmp_path / "none",)) is None


def test_constructor_prefers_the_workload_api(agent: DevAgent, issuer: Issuer, tmp_path: Path) -> None:
    issuer.write(tmp_path, SERVER_ID)
    folder_env = {"SPIFFE_CREDENTIAL_FOLDER": str(tmp_path)}
    with x509_source(env={**folder_env, "SPIFFE_ENDPOINT_SOCKET": agent.address}, timeout=10) as api:
        assert isinstance(api, X509Source)
    with x509_source(env=folder_env, timeout=10) as files:
        assert isinstance(files, FileX509Source) and str(files.svid().spiffe_id) == SERVER_ID
    with pytest.raises(CredentialFolderError, match="SPIFFE_CREDENTIAL_FOLDER"):
        x509_source(env={}, timeout=10)


async def test_async_twin(agent: DevAgent, issuer: Issuer, tmp_path: Path) -> None:
    issuer.write(tmp_path, SERVER_ID)
    seen: list[int] = []
    arrived = asyncio.Event()

    def on_update(ctx: X509Context) -> None:
        seen.append(ctx.default_svid.leaf.serial_number)
        arrived.set()

    async with AsyncFileX509Source(tmp_path, timeout=10) as source:
        source.subscribe(on_update)
        assert str(source.svid().spiffe_id) == SERVER_ID
        rotated = issuer.write(tmp_path, SERVER_ID)
        ctx = await source.wait_for(lambda c: c.default_svid.leaf.serial_number == rotated)
        assert ctx.default_svid.leaf.serial_number == rotated
        async with asyncio.timeout(DEADLINE):
            while rotated not in seen:  # the subscriber runs in a task of its own
                arrived.clear()
                await arrived.wait()
    api = await async_x509_source(env={"SPIFFE_ENDPOINT_SOCKET": agent.address}, timeout=10)
    try:
        assert type(api) is AsyncX509Source
    finally:
        await api.close()
    folder = await async_x509_source(env={"SPIFFE_CREDENTIAL_FOLDER": str(tmp_path)}, timeout=10)
    try:
        assert isinstance(folder, AsyncFileX509Source) and folder.svid().leaf.serial_number == rotated
    finally:
        await folder.close()
