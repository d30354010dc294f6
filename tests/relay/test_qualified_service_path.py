"""The dev agent and the relay also answer ``/spiffe.workloadapi.SpiffeWorkloadAPI/<Method>``.

linkerd2-proxy v2.329 and v2.330 call that package-qualified path (linkerd2 issue 14730);
SPIRE answers it Unimplemented. The client here calls the paths directly (no client
library), as such a proxy does, and must get what the spec path serves.
"""

from __future__ import annotations

import grpc
import pytest
from _support.wire import HEADER
from relay_helpers import STREAMS

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Relay

QUALIFIED = "/spiffe.workloadapi.SpiffeWorkloadAPI/"
SPEC = "/SpiffeWorkloadAPI/"


def first_message(target: str, path: str, request: bytes, metadata: object = HEADER) -> bytes:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_stream(path)(request, metadata=metadata, timeout=10)
        try:
            return bytes(next(call))
        finally:
            call.cancel()


@pytest.fixture(params=["dev-agent", "relay"])
def target(request: pytest.FixtureRequest, dev_agent: DevAgent) -> str:
    if request.param == "dev-agent":
        return "unix:" + dev_agent.socket_path
    relay: Relay = request.getfixturevalue("relay")
    return "unix:" + relay.socket_path


@pytest.mark.parametrize("method", sorted(STREAMS))
def test_qualified_path_streams_what_the_spec_path_streams(
    dev_agent: DevAgent, target: str, method: str
) -> None:
    request = STREAMS[method][0].SerializeToString()
    qualified = first_message(target, QUALIFIED + method, request)
    assert qualified == first_message(target, SPEC + method, request)
    if method == "FetchX509SVID":
        svids = pb.X509SVIDResponse.FromString(qualified).svids
        assert [s.spiffe_id for s in svids] == [i.spiffe_id for i in dev_agent.identities]


def test_qualified_path_forwards_jwt_calls_through_the_relay(dev_agent: DevAgent, relay: Relay) -> None:
    with grpc.insecure_channel("unix:" + relay.socket_path) as channel:
        raw = channel.unary_unary(QUALIFIED + "FetchJWTSVID")(
            pb.JWTSVIDRequest(audience=["aud"]).SerializeToString(), metadata=HEADER, timeout=10
        )
    (svid,) = pb.JWTSVIDResponse.FromString(raw).svids
    assert svid.spiffe_id == dev_agent.identities[0].spiffe_id
    assert dev_agent.calls("FetchJWTSVID") == 1


def test_qualified_path_still_needs_the_security_header(target: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        first_message(target, QUALIFIED + "FetchX509SVID", pb.X509SVIDRequest().SerializeToString(), ())
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "security header missing from request"


@pytest.mark.parametrize("service", ["spiffe.SpiffeWorkloadAPI", "workloadapi.SpiffeWorkloadAPI", "Other"])
def test_other_service_names_stay_unimplemented(target: str, service: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        first_message(target, f"/{service}/FetchX509SVID", pb.X509SVIDRequest().SerializeToString())
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
