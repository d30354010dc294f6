"""Our sync and asyncio clients against the real SPIRE agent, checked against SPIRE's own view.

Ground truth comes from outside our code: ``spire-server bundle show`` (the trust bundle),
``spire-agent api fetch x509`` (the raw bytes the agent serves, decoded by SPIRE's Go CLI),
the federated CA this test process created, and py-spiffe reading the same socket.
Every comparison of SVIDs is made within one rotation window: the fetches are repeated
when a rotation landed between them (serials differ).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from interop_support import der_of, pem_certs, public_der, split_der
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient
from spire import SpireDeployment

from spiffe_bridge import (
    AsyncJWTSource,
    AsyncWorkloadClient,
    AsyncX509BundleSource,
    JwtBundleSet,
    SourceClosedError,
    WorkloadClient,
    X509BundleSet,
    X509BundleSource,
    X509Context,
)

pytest_plugins = ("interop_support",)

AUDIENCE = "spiffe-bridge-interop"


def serials(ctx: X509Context) -> dict[str, int]:
    return {str(s.spiffe_id): s.leaf.serial_number for s in ctx.svids}


def material(ctx: X509Context) -> list[tuple[str, str, tuple[bytes, ...], bytes, bytes]]:
    """Per SVID, in the agent's order: ID, hint, chain DER, key DER, own bundle DER."""
    return [
        (str(s.spiffe_id), s.hint, s.chain_der, s.key_der, ctx.bundles[s.spiffe_id.trust_domain].der)
        for s in ctx.svids
    ]


def cli_material(resp: dict[str, Any]) -> list[tuple[str, str, bytes, bytes, bytes]]:
    """The same from ``spire-agent api fetch x509 -output json`` (base64 fields)."""
    return [
        (
            s["spiffe_id"],
            s.get("hint", ""),
            base64.b64decode(s["x509_svid"]),
            base64.b64decode(s["x509_svid_key"]),
            base64.b64decode(s["bundle"]),
        )
        for s in resp["svids"]
    ]


def in_one_rotation(fetch: Callable[[], Any], serials_of: Callable[[Any], list[dict[str, int]]]) -> Any:
    """Call ``fetch`` until every view it returns holds the same leaf serials (3 tries)."""
    for _ in range(3):
        result = fetch()
        views = serials_of(result)
        if all(v == views[0] for v in views):
            return result
    raise AssertionError(f"a rotation landed between the fetches three times in a row: {views}")


def check_x509_context(spire: SpireDeployment, ctx: X509Context) -> None:
    """Every registered SVID with its hint, the own bundle as the server has it, the federated CA."""
    assert {str(s.spiffe_id): s.hint for s in ctx.svids} == {e.spiffe_id: e.hint for e in spire.entries}
    server_roots = [der_of(c) for c in pem_certs(spire.server.bundle_pem().encode())]
    own = ctx.bundle_for(spire.trust_domain)
    assert own is not None and list(own.authorities_der) == server_roots
    assert spire.federated_ca is not None
    assert {td.name for td in ctx.federated} == {spire.federated_trust_domain}
    fed = ctx.bundle_for(spire.federated_trust_domain)
    assert fed is not None and fed.authorities_der == (spire.federated_ca.cert_der,)
    now = dt.datetime.now(dt.UTC)
    for svid in ctx.svids:
        assert 0 < (svid.expires_at - now).total_seconds() <= spire.svid_ttl + 5


def check_x509_bundles(spire: SpireDeployment, bundles: X509BundleSet, ctx: X509Context) -> None:
    assert {td.name for td in bundles.bundles} == {spire.trust_domain, spire.federated_trust_domain}
    for td, bundle in bundles.bundles.items():
        assert bundle == ctx.bundles[td]


def check_jwt_bundles(spire: SpireDeployment, bundles: JwtBundleSet) -> None:
    assert {td.name for td in bundles.bundles} == {spire.trust_domain, spire.federated_trust_domain}
    own = bundles.bundle_for(spire.trust_domain)
    assert own is not None and own.keys
    fed = bundles.bundle_for(spire.federated_trust_domain)
    assert fed is not None and spire.federated_ca is not None
    ca = spire.federated_ca
    assert list(fed.keys) == [ca.jwt_kid]
    assert public_der(fed.keys[ca.jwt_kid]) == public_der(ca.jwt_key.public_key())


def test_sync_fetch_and_watch_see_every_svid_hint_and_bundle(spire: SpireDeployment) -> None:
    with WorkloadClient(spire.workload_api_address, timeout=15) as client:

        def fetch() -> tuple[X509Context, X509Context, dict[str, Any]]:
            watched = next(iter(client.watch_x509_contexts()))
            return client.fetch_x509_context(), watched, spire.fetch_x509()

        ctx, watched, cli = in_one_rotation(
            fetch,
            lambda r: [
                serials(r[0]),
                serials(r[1]),
                {
                    s["spiffe_id"]: x509.load_der_x509_certificate(
                        split_der(base64.b64decode(s["x509_svid"]))[0]
                    ).serial_number
                    for s in r[2]["svids"]
                },
            ],
        )
        x509_bundles = client.fetch_x509_bundles()
        watched_bundles = next(iter(client.watch_x509_bundles()))
        jwt_bundles = client.fetch_jwt_bundles()
        watched_jwt = next(iter(client.watch_jwt_bundles()))

    check_x509_context(spire, ctx)
    # byte for byte what the agent serves, as SPIRE's own CLI decodes it, in the agent's order
    assert [(i, h, b"".join(c), k, b) for i, h, c, k, b in material(ctx)] == cli_material(cli)
    assert material(watched) == material(ctx) and watched.digest == ctx.digest
    check_x509_bundles(spire, x509_bundles, ctx)
    assert watched_bundles.digest == x509_bundles.digest
    check_jwt_bundles(spire, jwt_bundles)
    assert watched_jwt.digest == jwt_bundles.digest


async def test_async_fetch_and_watch_match_the_sync_client(spire: SpireDeployment) -> None:
    async with AsyncWorkloadClient(spire.workload_api_address, timeout=15) as aclient:

        async def fetch() -> tuple[X509Context, X509Context, X509Context]:
            watch = aclient.watch_x509_contexts()
            watched = await anext(watch)
            await watch.aclose()
            ctx = await aclient.fetch_x509_context()
            sync = await asyncio.to_thread(_sync_context, spire.workload_api_address)
            return ctx, watched, sync

        for _ in range(3):
            ctx, watched, sync = await fetch()
            if serials(ctx) == serials(watched) == serials(sync):
                break
        else:
            raise AssertionError("a rotation landed between the fetches three times in a row")

        x509_bundles = await aclient.fetch_x509_bundles()
        jwt_bundles = await aclient.fetch_jwt_bundles()
        jwt_watch = aclient.watch_jwt_bundles()
        watched_jwt = await anext(jwt_watch)
        await jwt_watch.aclose()
        bundle_watch = aclient.watch_x509_bundles()
        watched_bundles = await anext(bundle_watch)
        await bundle_watch.aclose()

    check_x509_context(spire, ctx)
    assert material(ctx) == material(sync) == material(watched)
    check_x509_bundles(spire, x509_bundles, ctx)
    assert watched_bundles.digest == x509_bundles.digest
    check_jwt_bundles(spire, jwt_bundles)
    assert watched_jwt.digest == jwt_bundles.digest
    with WorkloadClient(spire.workload_api_address, timeout=15) as client:
        assert client.fetch_jwt_bundles().digest == jwt_bundles.digest


def _sync_context(address: str) -> X509Context:
    with WorkloadClient(address, timeout=15) as client:
        return client.fetch_x509_context()


def py_bundle_map(bundle_set: Any) -> dict[str, set[bytes]]:
    """py-spiffe's X.509 bundle set as trust domain -> set of authority DER."""
    return {b.trust_domain.name: {der_of(c) for c in b.x509_authorities} for b in bundle_set.bundles}


def bundle_map(bundles: Any) -> dict[str, set[bytes]]:
    return {td.name: set(b.authorities_der) for td, b in bundles.items()}


def _pyspiffe_key_der(svid: Any) -> bytes:
    return bytes(
        svid.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_our_client_and_pyspiffe_see_identical_der(spire: SpireDeployment) -> None:
    def fetch() -> tuple[X509Context, Any]:
        with WorkloadClient(spire.workload_api_address, timeout=15) as ours:
            ctx = ours.fetch_x509_context()
        with WorkloadApiClient(socket_path=spire.workload_api_address, default_timeout=15) as theirs:
            return ctx, theirs.fetch_x509_context()

    ctx, py = in_one_rotation(
        fetch, lambda r: [serials(r[0]), {str(s.spiffe_id): s.leaf.serial_number for s in r[1].x509_svids}]
    )
    # same SVIDs in the same order; chain and PKCS#8 key byte for byte
    theirs = [
        (str(s.spiffe_id), tuple(der_of(c) for c in s.cert_chain), _pyspiffe_key_der(s))
        for s in py.x509_svids
    ]
    assert theirs == [(sid, chain, key) for sid, _hint, chain, key, _bundle in material(ctx)]
    # same bundle set: trust domains and authorities (py-spiffe keeps them as a set)
    assert py_bundle_map(py.x509_bundle_set) == bundle_map(ctx.bundles)

    with WorkloadApiClient(socket_path=spire.workload_api_address, default_timeout=15) as theirs:
        py_x509_bundles = theirs.fetch_x509_bundles()
        py_jwt = theirs.fetch_jwt_bundles()
    with WorkloadClient(spire.workload_api_address, timeout=15) as ours:
        x509_bundles = ours.fetch_x509_bundles()
        jwt_bundles = ours.fetch_jwt_bundles()
    assert py_bundle_map(py_x509_bundles) == bundle_map(x509_bundles.bundles)
    for td, bundle in jwt_bundles.bundles.items():
        theirs_bundle = py_jwt.get_bundle_for_trust_domain(PyTrustDomain(td.name))
        assert theirs_bundle is not None, td
        assert {kid: public_der(k) for kid, k in theirs_bundle.jwt_authorities.items()} == {
            kid: public_der(k) for kid, k in bundle.keys.items()
        }
    assert len(py_jwt.bundles) == len(jwt_bundles.bundles)


def test_upstream_chain_with_intermediate_reaches_both_clients(spire_upstream: SpireDeployment) -> None:
    """With an UpstreamAuthority, SVIDs carry SPIRE's intermediate: both clients get leaf + intermediate."""
    d = spire_upstream

    def fetch() -> tuple[X509Context, Any]:
        with WorkloadClient(d.workload_api_address, timeout=15) as ours:
            ctx = ours.fetch_x509_context()
        with WorkloadApiClient(socket_path=d.workload_api_address, default_timeout=15) as theirs:
            return ctx, theirs.fetch_x509_context()

    ctx, py = in_one_rotation(
        fetch, lambda r: [serials(r[0]), {str(s.spiffe_id): s.leaf.serial_number for s in r[1].x509_svids}]
    )
    upstream_root = d.upstream_ca.cert_der  # type: ignore[attr-defined]
    own = ctx.bundle_for(d.trust_domain)
    assert own is not None and own.authorities_der == (upstream_root,)
    for svid in ctx.svids:
        assert len(svid.chain_der) == 2
        assert svid.intermediates[0].issuer == own.authorities[0].subject
    assert [tuple(der_of(c) for c in s.cert_chain) for s in py.x509_svids] == [s.chain_der for s in ctx.svids]


async def test_bundle_and_jwt_sources_over_one_lent_client(spire: SpireDeployment) -> None:
    """AsyncX509BundleSource and AsyncJWTSource on SPIRE, streaming over a client they do not own."""
    async with AsyncWorkloadClient(spire.workload_api_address, timeout=15) as aclient:
        ctx = await aclient.fetch_x509_context()
        async with (
            AsyncX509BundleSource(client=aclient, timeout=15) as bundle_source,
            AsyncJWTSource(client=aclient, timeout=15) as jwt_source,
        ):
            check_x509_bundles(spire, bundle_source.bundles, ctx)
            check_jwt_bundles(spire, jwt_source.bundles)
            svid = await jwt_source.fetch_svid(AUDIENCE)
            assert await jwt_source.fetch_svid(AUDIENCE) is svid
            assert jwt_source.validate(svid.token, AUDIENCE).spiffe_id == svid.spiffe_id
            agent_view = await aclient.validate_jwt_svid(svid.token, AUDIENCE)  # SPIRE agrees
            assert agent_view.spiffe_id == svid.spiffe_id
        with pytest.raises(SourceClosedError):
            jwt_source.validate(svid.token, AUDIENCE)
        assert (await aclient.fetch_x509_bundles()).digest == bundle_source.state.item.digest  # type: ignore[union-attr]
    with X509BundleSource(spire.workload_api_address, timeout=15) as sync_source:
        check_x509_bundles(spire, sync_source.bundles, ctx)
