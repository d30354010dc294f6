"""Hand-built Workload API messages for core tests, from the dev agent's CA."""

from __future__ import annotations

from typing import Any

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.ca import TrustDomainCA


def svid_message(ca: TrustDomainCA, spiffe_id: str = "spiffe://example.org/web", hint: str = "") -> Any:
    mat = ca.issue_x509_svid(spiffe_id, ttl=3600, hint=hint)
    return pb.X509SVID(
        spiffe_id=spiffe_id,
        x509_svid=mat.chain_der(),
        x509_svid_key=mat.key_der(),
        bundle=ca.bundle_der(),
        hint=hint,
    )
