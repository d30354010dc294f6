"""JWT files: raw tokens (0600), spiffe-helper's bundle JSON and plain JWKS per trust domain."""

from __future__ import annotations

import base64
import json

import pytest

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_jwt_bundles
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.formats import JwtOptions, render_jwt
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid


@pytest.fixture(scope="module")
def cas() -> tuple[TrustDomainCA, TrustDomainCA]:
    return TrustDomainCA("example.org"), TrustDomainCA("partner.test")


def bundle_set(*cas: TrustDomainCA) -> JwtBundleSet:
    return decode_jwt_bundles(pb.JWTBundlesResponse(bundles={ca.id: ca.jwks_json() for ca in cas}))


def test_tokens_are_written_verbatim(cas: tuple[TrustDomainCA, TrustDomainCA]) -> None:
    ca = cas[0]
    a = JwtSvid.parse_insecure(ca.mint_jwt_svid("spiffe://example.org/web", ["db"], ttl=300))
    b = JwtSvid.parse_insecure(ca.mint_jwt_svid("spiffe://example.org/web", ["cache"], ttl=300))
    files = render_jwt([(a, "db.token"), (b, "tokens/cache.token")], None)
    assert [(f.name, f.data, f.mode) for f in files] == [
        ("db.token", a.token.encode(), 0o600),
        ("tokens/cache.token", b.token.encode(), 0o600),
    ]


def test_bundle_file_has_spiffe_helpers_shape(cas: tuple[TrustDomainCA, TrustDomainCA]) -> None:
    files = {f.name: f for f in render_jwt([], bundle_set(*cas))}
    helper = files["jwt_bundle.json"]
    assert helper.mode == 0o600
    # Go's json.Marshal of a map: keys sorted, no whitespace
    assert helper.data.startswith(b'{"example.org":"') and b" " not in helper.data
    doc = json.loads(helper.data)
    assert list(doc) == ["example.org", "partner.test"]
    for ca in cas:
        assert base64.b64decode(doc[ca.trust_domain], validate=True) == ca.jwks_json()
        assert files[f"jwks/{ca.trust_domain}.json"].data == ca.jwks_json()


def test_bundle_outputs_can_be_renamed_or_skipped(cas: tuple[TrustDomainCA, TrustDomainCA]) -> None:
    options = JwtOptions(jwt_bundle_file_name="bundle.json", jwks_dir=None, jwt_bundle_file_mode=0o644)
    files = render_jwt([], bundle_set(cas[0]), options)
    assert [(f.name, f.mode) for f in files] == [("bundle.json", 0o644)]
    assert render_jwt([], bundle_set(cas[0]), JwtOptions(jwt_bundle_file_name=None, jwks_dir=None)) == []
