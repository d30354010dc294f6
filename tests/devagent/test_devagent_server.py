"""Server behaviour seen on the wire: header rule, errors, pushes, lifecycle."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from _support.wire import HEADER
from cryptography import x509
from devagent_helpers import CALL_TIMEOUT, Collector
from google.protobuf import json_format

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._proto import workload_pb2_grpc
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.devagent.server import DevAgent

Stub = workload_pb2_grpc.SpiffeWorkloadAPIStub
WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"


def all_calls(stub: Stub) -> dict[str, Callable[..., Any]]:
    """Each RPC as a callable that returns the first answer."""
    return {
        "FetchX509SVID": lambda **kw: next(stub.FetchX509SVID(pb.X509SVIDRequest(), **kw)),
        "FetchX509Bundles": lambda **kw: next(stub.FetchX509Bundles(pb.X509BundlesRequest(), **kw)),
        "FetchJWTBundles": lambda **kw: next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), **kw)),
        "FetchJWTSVID": lambda **kw: stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["a"]), **kw),
        "ValidateJWTSVID": lambda **kw: stub.ValidateJWTSVID(
            pb.ValidateJWTSVIDRequest(audience="a", svid="x.y.z"), **kw
        ),
    }


@pytest.mark.parametrize(
    "metadata",
    [(), (("workload.spiffe.io", "True"),), (("workload.spiffe.io", "true"), ("workload.spiffe.io", "true"))],
    ids=["missing", "wrong-case", "duplicated"],
)
def test_security_header_enforced_on_every_rpc(
    dev_agent: DevAgent, stub: Stub, metadata: tuple[tuple[str, str], ...]
) -> None:
    for name, call in all_calls(stub).items():
        with pytest.raises(grpc.RpcError) as info:
            call(metadata=metadata, timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert info.value.details() == "security header missing from request"
        assert dev_agent.calls(name) == 1


def test_header_accepted(dev_agent: DevAgent, stub: Stub) -> None:
    response = next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT))
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/workload"]


@pytest.mark.dev_agent(identities=[WEB, DB])
def test_fetch_jwt_svid_rules(dev_agent: DevAgent, stub: Stub) -> None:
    def fetch(audience: list[str], spiffe_id: str = "") -> pb.JWTSVIDResponse:
        request = pb.JWTSVIDRequest(audience=audience, spiffe_id=spiffe_id)
        response: pb.JWTSVIDResponse = stub.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT)
        return response

    assert [s.spiffe_id for s in fetch(["a"]).svids] == [WEB, DB]
    assert [s.spiffe_id for s in fetch(["a"], DB).svids] == [DB]
    with pytest.raises(grpc.RpcError) as info:
        fetch([])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        fetch(["a"], "not a spiffe id")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        fetch(["a"], "spiffe://example.org/stranger")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "no identity issued"


@pytest.mark.dev_agent(federate_with=["partner.test"])
def test_validate_jwt_svid_returns_claims(dev_agent: DevAgent, stub: Stub) -> None:
    def validate(token: str, audience: str) -> pb.ValidateJWTSVIDResponse:
        request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
        result: pb.ValidateJWTSVIDResponse = stub.ValidateJWTSVID(
            request, metadata=HEADER, timeout=CALL_TIMEOUT
        )
        return result

    token = dev_agent.mint_jwt_svid(["svc", "other"])
    result = validate(token, "other")
    assert result.spiffe_id == "spiffe://example.org/workload"
    claims = json_format.MessageToDict(result.claims)
    assert claims["sub"] == result.spiffe_id
    assert claims["aud"] == ["svc", "other"]
    assert claims["exp"] > claims["iat"]

    partner = dev_agent.federated_trust_domains["partner.test"]
    fed_token = partner.mint_jwt_svid("spiffe://partner.test/api", ["svc"], ttl=60)
    assert validate(fed_token, "svc").spiffe_id == "spiffe://partner.test/api"

    stranger = TrustDomainCA("stranger.test").mint_jwt_svid("spiffe://stranger.test/w", ["svc"], ttl=60)
    expired = dev_agent.ca.sign_jwt({"sub": WEB, "aud": "svc", "exp": 1})
    for bad, audience in [(token, "nope"), (expired, "svc"), (stranger, "svc"), ("", "svc"), (token, "")]:
        with pytest.raises(grpc.RpcError) as info:
            validate(bad, audience)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_permission_denied_terminates_open_streams(dev_agent: DevAgent, stub: Stub) -> None:
    streams = [
        stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT),
        stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT),
        stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT),
    ]
    for stream in streams:
        next(stream)
    dev_agent.deny()
    for stream in streams:
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "no identity issued"
    with pytest.raises(grpc.RpcError) as info:
        next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    dev_agent.allow()
    assert next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)).svids


def test_timed_permission_denied_window_ends_by_itself(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.deny(0.3)
    assert dev_agent.denied
    dev_agent.wait_until(lambda: not dev_agent.denied, timeout=5, what="window end")
    assert next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)).svids


def test_removing_all_identities_denies_like_spire(dev_agent: DevAgent, stub: Stub) -> None:
    stream = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
    next(stream)
    dev_agent.set_identities([])
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def x509_stream(stub: Stub) -> Iterator[Any]:
    stream = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
    yield stream
    stream.cancel()


def test_every_push_carries_the_full_state(dev_agent: DevAgent, x509_stream: Any) -> None:
    first = next(x509_stream)
    assert [s.spiffe_id for s in first.svids] == ["spiffe://example.org/workload"]
    assert dict(first.federated_bundles) == {}

    dev_agent.add_identity(f"{WEB}#web")
    second = next(x509_stream)
    assert [(s.spiffe_id, s.hint) for s in second.svids] == [
        ("spiffe://example.org/workload", ""),
        (WEB, "web"),
    ]
    assert all(s.x509_svid and s.x509_svid_key and s.bundle for s in second.svids)

    partner = dev_agent.add_federated_trust_domain("partner.test")
    third = next(x509_stream)
    assert len(third.svids) == 2
    assert dict(third.federated_bundles) == {"spiffe://partner.test": partner.bundle_der()}

    dev_agent.remove_federated_trust_domain("partner.test")
    fourth = next(x509_stream)
    assert dict(fourth.federated_bundles) == {}  # redaction: absent means removed
    assert len(fourth.svids) == 2


def test_rotation_gives_new_keys_and_root_rotation_new_bundle(dev_agent: DevAgent, x509_stream: Any) -> None:
    first = next(x509_stream).svids[0]
    dev_agent.rotate()
    second = next(x509_stream).svids[0]
    assert second.x509_svid_key != first.x509_svid_key and second.x509_svid != first.x509_svid
    assert second.bundle == first.bundle

    dev_agent.rotate_x509_bundle()
    third = next(x509_stream).svids[0]
    assert third.bundle == dev_agent.ca.bundle_der() and third.bundle.endswith(first.bundle)
    assert len(dev_agent.ca.roots) == 2  # old root kept while SVIDs roll over
    leaf = x509.load_der_x509_certificate(third.x509_svid)
    assert leaf.issuer == dev_agent.ca.roots[0].subject
    dev_agent.drop_previous_x509_authorities()
    assert next(x509_stream).svids[0].bundle == dev_agent.ca.bundle_der() != third.bundle


def test_bundle_streams_follow_changes(dev_agent: DevAgent, stub: Stub) -> None:
    x509_bundles = stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
    jwt_bundles = stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
    assert set(next(x509_bundles).bundles) == {"spiffe://example.org"}
    assert set(next(jwt_bundles).bundles) == {"spiffe://example.org"}
    dev_agent.add_federated_trust_domain("partner.test")
    assert set(next(x509_bundles).bundles) == {"spiffe://example.org", "spiffe://partner.test"}
    jwks = next(jwt_bundles).bundles
    assert set(jwks) == {"spiffe://example.org", "spiffe://partner.test"}
    assert jwks["spiffe://example.org"] == dev_agent.ca.jwks_json()
    x509_bundles.cancel()
    jwt_bundles.cancel()


def test_stop_drops_streams_and_removes_socket(dev_agent: DevAgent, x509_stream: Any) -> None:
    next(x509_stream)
    dev_agent.wait_for_streams(1, rpc="FetchX509SVID")
    dev_agent.stop()
    with pytest.raises(grpc.RpcError) as info:
        next(x509_stream)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dev_agent.open_streams() == 0
    assert not os.path.exists(dev_agent.socket_path)
    assert not dev_agent.running


def test_restart_serves_again_on_the_same_socket(dev_agent: DevAgent, x509_stream: Any) -> None:
    before = next(x509_stream)
    dev_agent.restart()
    with pytest.raises(grpc.RpcError):
        next(x509_stream)
    with grpc.insecure_channel(dev_agent.grpc_target) as channel:
        fresh = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        after = next(fresh.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT))
    assert after.svids[0].x509_svid == before.svids[0].x509_svid  # a restart keeps the identity


def test_socket_permissions(dev_agent_factory: Callable[..., DevAgent]) -> None:
    default = dev_agent_factory()
    wider = dev_agent_factory(socket_mode=0o660)
    assert stat.S_ISSOCK(os.stat(default.socket_path).st_mode)
    assert stat.S_IMODE(os.stat(default.socket_path).st_mode) == 0o600  # it hands out private keys
    assert stat.S_IMODE(os.stat(wider.socket_path).st_mode) == 0o660
    assert default.address == f"unix://{default.socket_path}"
    assert default.env() == {"SPIFFE_ENDPOINT_SOCKET": default.address}


def test_refuses_overlong_socket_path_and_non_socket_files() -> None:
    with pytest.raises(ValueError, match="longer than"):
        DevAgent("/tmp/" + "x" * 120)
    directory = tempfile.mkdtemp(prefix="sb-", dir="/tmp")
    try:
        regular = os.path.join(directory, "file")
        with open(regular, "w") as f:
            f.write("not a socket")
        with pytest.raises(FileExistsError):
            DevAgent(regular).start()
    finally:
        shutil.rmtree(directory)


def test_automatic_rotation(dev_agent_factory: Callable[..., DevAgent]) -> None:
    agent = dev_agent_factory(rotate_every=0.1)
    with grpc.insecure_channel(agent.grpc_target) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        stream = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
        serials = {next(stream).svids[0].x509_svid for _ in range(3)}
        stream.cancel()
    assert len(serials) == 3
    agent.set_rotation_interval(None)
    assert agent.rotate_every is None


def test_pushes_are_logged_without_key_material(
    dev_agent: DevAgent, x509_stream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spiffe_bridge.devagent")
    next(x509_stream)
    dev_agent.rotate()
    message = next(x509_stream)
    dev_agent.wait_for_messages("FetchX509SVID", 2)
    pushes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pushed FetchX509SVID")]
    assert pushes and all("spiffe://example.org/workload" in p for p in pushes)
    key = message.svids[0].x509_svid_key
    text = "\n".join(r.getMessage() for r in caplog.records)
    for encoding in (key.hex(), base64.b64encode(key).decode(), "PRIVATE KEY"):
        assert encoding not in text


def test_counters_and_waits(dev_agent: DevAgent, stub: Stub) -> None:
    opened = Collector[Any]()

    def open_stream() -> None:
        stream = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
        next(stream)
        opened.add(stream)

    threads = [threading.Thread(target=open_stream) for _ in range(3)]
    for t in threads:
        t.start()
    dev_agent.wait_for_streams(3, rpc="FetchX509SVID")
    dev_agent.wait_for_calls("FetchX509SVID", 3)
    assert dev_agent.streams_opened("FetchX509SVID") == 3
    for t in threads:
        t.join()
    for stream in opened.items:
        stream.cancel()
    dev_agent.wait_for_no_streams()
    with pytest.raises(TimeoutError, match="4 FetchX509SVID calls"):
        dev_agent.wait_for_calls("FetchX509SVID", 4, timeout=0.05)


def test_repeated_restarts_each_reach_the_reconnected_stream(dev_agent: DevAgent) -> None:
    fast_reconnect = [
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 100),
    ]
    received: Collector[bytes] = Collector()
    done = threading.Event()
    channel = grpc.insecure_channel(dev_agent.grpc_target, options=fast_reconnect)
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]

    def watch() -> None:
        while not done.is_set():
            try:
                for message in stub.FetchX509SVID(
                    pb.X509SVIDRequest(), metadata=HEADER, wait_for_ready=True, timeout=60
                ):
                    received.add(message.svids[0].x509_svid)
            except grpc.RpcError:
                continue
            except ValueError:  # channel closed at the end of the test
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        received.wait_count(1)
        for i in range(20):
            dev_agent.restart()
            received.wait_count(i + 2)
        assert dev_agent.streams_opened("FetchX509SVID") == len(received.items) == 21
        assert set(received.items) == {dev_agent.svids[0].chain_der()}
    finally:
        done.set()
        channel.close()
        watcher.join(10)
