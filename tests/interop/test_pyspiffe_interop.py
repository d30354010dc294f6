"""py-spiffe as a client of the real agent, of our relay, and of our dev agent.

The dev agent is configured like the SPIRE deployment (trust domain, the same SPIFFE IDs
and hints in the order SPIRE lists them, federation with federated.test), so py-spiffe
must see the same structure from all three: SVID IDs in order, chain shape, key type,
default SVID, X.509 and JWT bundle sets, JWT-SVID claims, ValidateJWTSVID accepted.
py-spiffe (0.3.x) has no notion of hints; our client reads them from all three.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from interop_support import jose_parts, short_socket_dir
from spiffe import WorkloadApiClient
from spire import SpireDeployment

from spiffe_bridge import WorkloadClient
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Kind, Relay

pytest_plugins = ("interop_support",)

AUDIENCE = "interop-pyspiffe"


def _key_kind(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def pyspiffe_view(address: str) -> dict[str, Any]:
    """What py-spiffe makes of a Workload API, reduced to its structure."""
    with WorkloadApiClient(socket_path=address, default_timeout=15) as client:
        ctx = client.fetch_x509_context()
        default = client.fetch_x509_svid()
        x509_bundles = client.fetch_x509_bundles()
        jwt_bundles = client.fetch_jwt_bundles()
        token = client.fetch_jwt_svid({AUDIENCE})
        tokens = client.fetch_jwt_svids({AUDIENCE})
        validated = client.validate_jwt_svid(token.token, AUDIENCE)
    header, claims = jose_parts(token.token)
    return {
        "svids": [
            (str(s.spiffe_id), len(s.cert_chain), _key_kind(s.private_key), hasattr(s, "hint"))
            for s in ctx.x509_svids
        ],
        "default": str(default.spiffe_id),
        "context_bundles": sorted(
            (b.trust_domain.name, len(b.x509_authorities)) for b in ctx.x509_bundle_set.bundles
        ),
        "x509_bundles": sorted((b.trust_domain.name, len(b.x509_authorities)) for b in x509_bundles.bundles),
        "jwt_bundles": sorted(
            (b.trust_domain.name, sorted(_key_kind(k) for k in b.jwt_authorities.values()))
            for b in jwt_bundles.bundles
        ),
        "jwt_default": str(token.spiffe_id),
        "jwt_all": sorted(str(t.spiffe_id) for t in tokens),
        "jwt_audience": sorted(token.audience),
        "jwt_header": sorted(header),
        "jwt_alg": header["alg"],
        "jwt_claims": sorted(claims),
        "validated": str(validated.spiffe_id),
    }


def our_hints(address: str) -> list[tuple[str, str]]:
    with WorkloadClient(address, timeout=15) as client:
        return [(str(s.spiffe_id), s.hint) for s in client.fetch_x509_context().svids]


def test_pyspiffe_sees_the_same_structure_from_spire_relay_and_dev_agent(
    spire: SpireDeployment, dev_agent_factory: Callable[..., DevAgent]
) -> None:
    # the dev agent, shaped like this SPIRE deployment
    spire_order = our_hints(spire.workload_api_address)
    dev = dev_agent_factory(
        trust_domain=spire.trust_domain,
        identities=[f"{sid}#{hint}" for sid, hint in spire_order],
        federate_with=[spire.federated_trust_domain],
    )
    with Relay(spire.workload_api_address, f"unix://{short_socket_dir('sbp-')}/relay.sock") as relay:
        for kind in Kind:
            relay.wait_serving(kind, timeout=15)
        views = {
            "spire": pyspiffe_view(spire.workload_api_address),
            "relay": pyspiffe_view(relay.address),
            "dev-agent": pyspiffe_view(dev.address),
        }
        hints = {
            "spire": spire_order,
            "relay": our_hints(relay.address),
            "dev-agent": our_hints(dev.address),
        }

    spire_view = views["spire"]
    assert [s[0] for s in spire_view["svids"]] == [sid for sid, _ in spire_order]
    assert spire_view["default"] == spire_order[0][0]
    assert {td for td, _ in spire_view["jwt_bundles"]} == {spire.trust_domain, spire.federated_trust_domain}
    assert spire_view["jwt_all"] == sorted(spire.expected_spiffe_ids)
    assert spire_view["validated"] == spire_view["jwt_default"]
    assert not any(has_hint for *_, has_hint in spire_view["svids"])  # py-spiffe drops hints
    assert views["relay"] == spire_view
    assert views["dev-agent"] == spire_view
    # our client gets the hints from all three
    assert hints["relay"] == hints["dev-agent"] == spire_order
    assert {hint for _, hint in spire_order} == {e.hint for e in spire.entries}
