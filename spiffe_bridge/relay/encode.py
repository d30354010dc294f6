"""Turn validated updates back into Workload API responses, with the agent's bytes.

The relay consumes the library's validated model (so it never re-serves what
the library would reject) and rebuilds each response from the DER and JWKS
bytes kept in that model: every certificate chain, key, bundle, CRL and JWKS
is re-served byte for byte as the agent sent it. Only the envelope is new:
map keys are written in canonical ``spiffe://<td>`` form, and an empty
federated bundle (which the model treats as "not trusted") is left out,
which means the same thing to a client.
"""

from __future__ import annotations

from collections.abc import Iterable

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.jwt import JwtBundleSet
from spiffe_bridge.model import X509BundleSet, X509Context, X509Svid


def x509_svid_response(context: X509Context, svids: Iterable[X509Svid]) -> pb.X509SVIDResponse:
    """An X509SVIDResponse with ``svids`` (a filtered subset of the context's) and its bundles."""
    items = []
    for svid in svids:
        bundle = context.bundles[svid.spiffe_id.trust_domain]
        items.append(
            pb.X509SVID(
                spiffe_id=str(svid.spiffe_id),
                x509_svid=b"".join(svid.chain_der),
                x509_svid_key=svid.key_der,
                bundle=bundle.der,
                hint=svid.hint,
            )
        )
    federated = {b.trust_domain.id_string: b.der for b in context.federated_bundles()}
    return pb.X509SVIDResponse(svids=items, crl=list(context.crls), federated_bundles=federated)


def x509_bundles_response(bundles: X509BundleSet) -> pb.X509BundlesResponse:
    """An X509BundlesResponse with every trust domain's authorities and the CRLs."""
    return pb.X509BundlesResponse(
        crl=list(bundles.crls),
        bundles={td.id_string: b.der for td, b in bundles.bundles.items()},
    )


def jwt_bundles_response(bundles: JwtBundleSet) -> pb.JWTBundlesResponse:
    """A JWTBundlesResponse with each trust domain's JWKS document as received."""
    return pb.JWTBundlesResponse(bundles={td.id_string: b.jwks for td, b in bundles.bundles.items()})
