"""The relay speaks the Workload API itself: security header, forwarded JWT calls, its socket file."""

from __future__ import annotations

import os
import socket
import stat

import grpc
import pytest
from _support.wire import HEADER
from relay_helpers import STREAMS, RelayFactory, raw_method

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import AgentUnavailableError, InvalidArgumentError, NoIdentityError
from spiffe_bridge.relay import Relay

UNARY = {
    "FetchJWTSVID": pb.JWTSVIDRequest(audience=["aud"]),
    "ValidateJWTSVID": pb.ValidateJWTSVIDRequest(audience="aud", svid="x.y.z"),
}
BAD_HEADERS = [
    (),
    (("workload.spiffe.io", "false"),),
    (("workload.spiffe.io", "true"), ("workload.spiffe.io", "true")),
]


@pytest.mark.parametrize("metadata", BAD_HEADERS, ids=["missing", "false", "twice"])
def test_security_header_is_enforced_by_the_relay(
    dev_agent: DevAgent, relay: Relay, metadata: tuple[tuple[str, str], ...]
) -> None:
    requests = {m: r for m, (r, _) in STREAMS.items()} | UNARY
    with grpc.insecure_channel("unix:" + relay.socket_path) as channel:
        for method, request in requests.items():
            call = raw_method(channel, method, method in STREAMS)
            with pytest.raises(grpc.RpcError) as err:
                result = call(request.SerializeToString(), metadata=metadata, timeout=10)
                if method in STREAMS:
                    next(result)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, method
            assert err.value.details() == "security header missing from request"
    assert dev_agent.calls("FetchJWTSVID") == dev_agent.calls("ValidateJWTSVID") == 0  # never forwarded
    assert relay.stats().rejected_calls == len(requests)


def test_jwt_calls_are_forwarded(dev_agent: DevAgent, relay: Relay) -> None:
    with WorkloadClient(relay.address) as client:
        svid = client.fetch_jwt_svid("aud", "other")
        assert str(svid.spiffe_id) == dev_agent.identities[0].spiffe_id
        assert set(svid.audience) == {"aud", "other"}
        validated = client.validate_jwt_svid(svid.token, "aud")
        assert validated.spiffe_id == svid.spiffe_id
        bundles = client.fetch_jwt_bundles()  # the token verifies with the relayed bundle too
        assert bundles.validate(svid.token, "other").spiffe_id == svid.spiffe_id
        with pytest.raises(InvalidArgumentError):  # upstream's InvalidArgument comes back as it is
            client.validate_jwt_svid(svid.token, "not-the-audience")
    assert dev_agent.calls("FetchJWTSVID") == 1 and dev_agent.calls("ValidateJWTSVID") == 2


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, NoIdentityError),
        (grpc.StatusCode.UNAVAILABLE, AgentUnavailableError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
    ],
)
def test_upstream_status_codes_are_kept(
    dev_agent: DevAgent, relay: Relay, code: grpc.StatusCode, error: type[Exception]
) -> None:
    dev_agent.fail_next("FetchJWTSVID", code, "scripted")
    with grpc.insecure_channel("unix:" + relay.socket_path) as channel:
        call = raw_method(channel, "FetchJWTSVID", False)
        with pytest.raises(grpc.RpcError) as err:
            call(UNARY["FetchJWTSVID"].SerializeToString(), metadata=HEADER, timeout=10)
    assert (err.value.code(), err.value.details()) == (code, "scripted")
    dev_agent.fail_next("FetchJWTSVID", code, "scripted")
    with WorkloadClient(relay.address) as client, pytest.raises(error):
        client.fetch_jwt_svid("aud")


def test_unknown_method_is_unimplemented(relay: Relay) -> None:
    with grpc.insecure_channel("unix:" + relay.socket_path) as channel:
        call = channel.unary_stream("/SpiffeWorkloadAPI/FetchWITSVID")
        with pytest.raises(grpc.RpcError) as err:
            next(call(b"", metadata=HEADER, timeout=10))
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_socket_mode_owner_and_cleanup(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    owner = f"{os.getuid()}:{os.getgid()}"
    relay = relay_factory(dev_agent.address, socket_mode=0o600, socket_owner=owner)
    info = os.lstat(relay.socket_path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
    assert [n for n in os.listdir(os.path.dirname(relay.socket_path)) if n.startswith(".")] == []
    relay.stop()
    assert not os.path.exists(relay.socket_path)


def test_stale_socket_is_replaced_live_one_is_not(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    first = relay_factory(dev_agent.address)
    path = first.socket_path
    with pytest.raises(FileExistsError, match="served by another process"):
        Relay(dev_agent.address, "unix://" + path).start()
    first.stop()

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # left behind as by a crash: a socket file nobody listens on
    stale.close()
    second = Relay(dev_agent.address, "unix://" + path).start()
    try:
        second.wait_serving()
        with WorkloadClient(second.address) as client:
            assert client.fetch_x509_context().svids
    finally:
        second.stop()

    with open(path, "w") as f:
        f.write("not a socket")
    with pytest.raises(FileExistsError, match="not a socket"):
        Relay(dev_agent.address, "unix://" + path).start()


def test_stop_ends_downstream_streams(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address)
    relay.wait_serving()
    with grpc.insecure_channel("unix:" + relay.socket_path) as channel:
        call = raw_method(channel, "FetchX509SVID", True)(b"", metadata=HEADER, timeout=30)
        next(call)
        relay.stop(grace=0)
        with pytest.raises(grpc.RpcError) as err:
            next(call)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    dev_agent.wait_for_no_streams()


def test_bad_addresses_are_refused(dev_agent: DevAgent) -> None:
    with pytest.raises(ValueError, match="Unix socket"):
        Relay(dev_agent.address, "tcp://127.0.0.1:8000")
    with pytest.raises(ValueError, match="own upstream"):
        Relay(dev_agent.address, dev_agent.address)
