"""JWT-SVIDs from the real agent, validated locally and by the agent (ValidateJWTSVID).

Own trust domain: tokens SPIRE mints. Federated trust domain: tokens this process mints
with the federated CA's JWT key (the key whose JWKS the SPIRE server holds for
federated.test), so both validators must accept them through federation. Wrong
audience, a forged signature and an unknown key are rejected by both.
"""

from __future__ import annotations

import grpc
import pytest
from interop_support import jose_parts, mint_jwt
from spiffe import JwtSvid as PyJwtSvid
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient
from spire import SpireDeployment
from spire_ca import FederatedCA

from spiffe_bridge import (
    AsyncWorkloadClient,
    InvalidArgumentError,
    JWTSource,
    JwtSvidError,
    WorkloadClient,
)

pytest_plugins = ("interop_support",)

AUDIENCE = "spiffe-bridge-interop"
PARTNER = "/partner/service"


def test_jwt_svids_for_every_identity_by_id_and_by_hint(spire: SpireDeployment) -> None:
    web = spire.spiffe_id("/workload/web")
    with WorkloadClient(spire.workload_api_address, timeout=15) as client:
        svids = client.fetch_jwt_svids(AUDIENCE)
        by_id = client.fetch_jwt_svid(AUDIENCE, spiffe_id=web)
        by_hint = client.fetch_jwt_svid(AUDIENCE, hint="db")
        multi = client.fetch_jwt_svid(AUDIENCE, "second-audience", spiffe_id=web)
        own = client.fetch_jwt_bundles().bundle_for(spire.trust_domain)
    assert own is not None
    own_kids = set(own.keys)

    hints = {e.spiffe_id: e.hint for e in spire.entries}
    assert {str(s.spiffe_id): s.hint for s in svids} == hints
    for svid in svids:
        header, claims = jose_parts(svid.token)
        assert header["alg"] in ("ES256", "RS256") and header["typ"] == "JWT"
        assert header["kid"] in own_kids
        assert set(claims) == {"sub", "aud", "exp", "iat"}
        assert claims["sub"] == str(svid.spiffe_id) and claims["aud"] == [AUDIENCE]
        assert svid.audience == (AUDIENCE,)
        assert svid.expiry - (svid.issued_at or 0) == spire.jwt_svid_ttl
    assert str(by_id.spiffe_id) == web and by_id.hint == "web"
    assert str(by_hint.spiffe_id) == spire.spiffe_id("/workload/db")
    assert multi.audience == (AUDIENCE, "second-audience")


def test_own_jwt_svid_validates_locally_and_via_the_agent(spire: SpireDeployment) -> None:
    web = spire.spiffe_id("/workload/web")
    with WorkloadClient(spire.workload_api_address, timeout=15) as client, JWTSource(client=client) as source:
        token = client.fetch_jwt_svid(AUDIENCE, spiffe_id=web).token
        bundles = client.fetch_jwt_bundles()

        local = bundles.validate(token, AUDIENCE)
        via_source = source.validate(token, AUDIENCE)
        remote = client.validate_jwt_svid(token, AUDIENCE)
        assert str(local.spiffe_id) == str(via_source.spiffe_id) == str(remote.spiffe_id) == web
        assert local.audience == remote.audience == (AUDIENCE,)
        assert local.expiry == remote.expiry
        assert remote.claims["sub"] == web

        # JWTSource's cached SVID is the same kind of token and validates the same way
        cached = source.fetch_svid(AUDIENCE, spiffe_id=web)
        assert source.fetch_svid(AUDIENCE, spiffe_id=web) is cached
        assert str(client.validate_jwt_svid(cached.token, AUDIENCE).spiffe_id) == web

        _rejected_by_both(client, source, token, "some-other-audience", "does not contain")
        forged = token[: token.rindex(".") + 1] + _flip(token[token.rindex(".") + 1 :])
        _rejected_by_both(client, source, forged, AUDIENCE, "does not verify")

    # py-spiffe validates SPIRE's token against the bundle it fetched itself
    with WorkloadApiClient(socket_path=spire.workload_api_address, default_timeout=15) as theirs:
        py_bundle = theirs.fetch_jwt_bundles().get_bundle_for_trust_domain(PyTrustDomain(spire.trust_domain))
        assert py_bundle is not None
        assert str(PyJwtSvid.parse_and_validate(token, py_bundle, {AUDIENCE}).spiffe_id) == web


async def test_async_client_validates_via_the_agent(spire: SpireDeployment) -> None:
    async with AsyncWorkloadClient(spire.workload_api_address, timeout=15) as client:
        svid = await client.fetch_jwt_svid(AUDIENCE, hint="batch")
        bundles = await client.fetch_jwt_bundles()
        remote = await client.validate_jwt_svid(svid.token, AUDIENCE)
        with pytest.raises(InvalidArgumentError) as info:
            await client.validate_jwt_svid(svid.token, "some-other-audience")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(remote.spiffe_id) == str(svid.spiffe_id) == spire.spiffe_id("/workload/batch")
    assert str(bundles.validate(svid.token, AUDIENCE).spiffe_id) == str(svid.spiffe_id)


def test_federated_jwt_svid_validates_locally_and_via_the_agent(spire: SpireDeployment) -> None:
    ca = spire.federated_ca
    assert ca is not None
    partner = f"spiffe://{spire.federated_trust_domain}{PARTNER}"
    token = mint_jwt(ca, partner, [AUDIENCE, "elsewhere"])
    with WorkloadClient(spire.workload_api_address, timeout=15) as client, JWTSource(client=client) as source:
        local = client.fetch_jwt_bundles().validate(token, AUDIENCE)
        remote = client.validate_jwt_svid(token, AUDIENCE)
        assert (
            str(local.spiffe_id) == str(remote.spiffe_id) == str(source.validate(token, AUDIENCE).spiffe_id)
        )
        assert str(remote.spiffe_id) == partner
        assert remote.audience == local.audience == (AUDIENCE, "elsewhere")

        _rejected_by_both(client, source, token, "some-other-audience", "does not contain")
        # the same trust domain name, but a key SPIRE was never told about
        impostor = FederatedCA(spire.federated_trust_domain)
        unknown_kid = mint_jwt(impostor, partner, [AUDIENCE])
        _rejected_by_both(client, source, unknown_kid, AUDIENCE, "is not in the bundle")
        # the federated trust domain's kid, signed with another key
        wrong_key = mint_jwt(impostor, partner, [AUDIENCE], kid=ca.jwt_kid)
        _rejected_by_both(client, source, wrong_key, AUDIENCE, "does not verify")
        # a trust domain nobody federates with
        stranger = FederatedCA("stranger.test")
        _rejected_by_both(
            client,
            source,
            mint_jwt(stranger, "spiffe://stranger.test/x", [AUDIENCE]),
            AUDIENCE,
            "no JWT bundle",
        )


def _flip(signature: str) -> str:
    """The same base64url signature with its first character changed."""
    return ("A" if signature[0] != "A" else "B") + signature[1:]


def _rejected_by_both(client: WorkloadClient, source: JWTSource, token: str, audience: str, why: str) -> None:
    with pytest.raises(JwtSvidError, match=why):
        source.bundles.validate(token, audience)
    with pytest.raises(JwtSvidError, match=why):
        source.validate(token, audience)
    # SPIRE answers InvalidArgument for a token it does not accept
    with pytest.raises(InvalidArgumentError) as info:
        client.validate_jwt_svid(token, audience)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
