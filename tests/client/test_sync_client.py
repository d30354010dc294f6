"""The sync client against the dev agent over a real Unix socket: every RPC, retries, stops."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

import grpc
import pytest

from spiffe_bridge import WorkloadClient
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import (
    DeadlineError,
    InvalidArgumentError,
    JwtSvidError,
    NoIdentityError,
    UnimplementedError,
)
from spiffe_bridge.retry import Backoff

FAST = Backoff(initial=0.01, maximum=0.05)


@pytest.mark.dev_agent(identities=["spiffe://example.org/web#web", "spiffe://example.org/db#db"])
def test_fetch_x509_context_with_hints(dev_agent: DevAgent) -> None:
    with WorkloadClient(dev_agent.address) as client:
        ctx = client.fetch_x509_context()
    assert [str(s.spiffe_id) for s in ctx.svids] == ["spiffe://example.org/web", "spiffe://example.org/db"]
    assert ctx.svid(hint="db").spiffe_id == ctx.svids[1].spiffe_id
    assert ctx.default_svid.leaf.serial_number == dev_agent.svids[0].serial_number


def test_env_var_address(dev_agent_env: DevAgent) -> None:
    with WorkloadClient() as client:
        assert client.fetch_x509_bundles().bundle_for(dev_agent_env.trust_domain) is not None
        assert client.endpoint == dev_agent_env.address


@pytest.mark.dev_agent(federate_with=["partner.test"])
def test_federated_bundles(dev_agent: DevAgent) -> None:
    with WorkloadClient(dev_agent.address) as client:
        ctx = client.fetch_x509_context()
        bundles = client.fetch_x509_bundles()
    assert ctx.bundle_for("partner.test") is not None
    assert {td.name for td in bundles.bundles} == {"example.org", "partner.test"}


def test_jwt_calls(dev_agent: DevAgent) -> None:
    with WorkloadClient(dev_agent.address) as client:
        svid = client.fetch_jwt_svid("svc", "extra")
        assert svid.audience == ("svc", "extra")
        bundles = client.fetch_jwt_bundles()
        assert str(bundles.validate(svid.token, "extra").spiffe_id) == str(svid.spiffe_id)
        remote = client.validate_jwt_svid(svid.token, "svc")
        assert remote.spiffe_id == svid.spiffe_id and remote.expiry == svid.expiry
        with pytest.raises(InvalidArgumentError) as rejected:
            client.validate_jwt_svid(svid.token, "wrong-audience")
        assert isinstance(rejected.value, JwtSvidError)  # a bad token, not a bad request
        assert "rejected the JWT-SVID" in str(rejected.value)
        with pytest.raises(ValueError, match="non-empty"):
            client.fetch_jwt_svid("")
        with pytest.raises(JwtSvidError):
            bundles.validate(svid.token[:-4] + "AAAA", "svc")


@pytest.mark.dev_agent(identities=["spiffe://example.org/a", "spiffe://example.org/b"])
def test_jwt_svid_for_one_id(dev_agent: DevAgent) -> None:
    with WorkloadClient(dev_agent.address) as client:
        svids = client.fetch_jwt_svids("svc")
        only_b = client.fetch_jwt_svid("svc", spiffe_id="spiffe://example.org/b")
    assert len(svids) == 2
    assert str(only_b.spiffe_id) == "spiffe://example.org/b"


def test_security_header_is_sent(dev_agent: DevAgent) -> None:
    # The dev agent rejects calls without it; prove the contrast with a raw channel.
    with grpc.insecure_channel(dev_agent.grpc_target) as channel:
        call = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=pb.X509SVIDRequest.SerializeToString,
            response_deserializer=pb.X509SVIDResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            next(iter(call(pb.X509SVIDRequest(), timeout=5)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with WorkloadClient(dev_agent.address) as client:
        assert client.fetch_x509_context().svids


def test_watch_sees_rotation(dev_agent: DevAgent) -> None:
    with WorkloadClient(dev_agent.address) as client:
        stream = client.watch_x509_contexts()
        first = next(stream)
        dev_agent.rotate()
        second = next(stream)
        assert first.default_svid.leaf.serial_number != second.default_svid.leaf.serial_number
        assert second.default_svid.leaf.serial_number == dev_agent.svids[0].serial_number


def test_watch_retries_then_stops_on_invalid_argument(dev_agent: DevAgent) -> None:
    errors: list[Exception] = []
    dev_agent.inject_errors(
        "FetchX509SVID",
        [
            (grpc.StatusCode.UNAVAILABLE, "busy"),
            (grpc.StatusCode.PERMISSION_DENIED, "no identity issued"),
        ],
    )
    with WorkloadClient(dev_agent.address, backoff=FAST) as client:
        stream = client.watch_x509_contexts(on_error=errors.append)
        assert next(stream).svids
        assert [type(e).__name__ for e in errors] == ["AgentUnavailableError", "NoIdentityError"]
        assert "registration entry" in str(errors[1])
        assert errors[1].code == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        dev_agent.fail_next("FetchX509SVID", grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        dev_agent.stop()  # ends the stream; the reconnect hits InvalidArgument and stops
        dev_agent.start()
        with pytest.raises(InvalidArgumentError):
            next(stream)


def test_unimplemented_is_not_retried(dev_agent: DevAgent) -> None:
    dev_agent.fail_next("FetchJWTBundles", grpc.StatusCode.UNIMPLEMENTED, "nope")
    with WorkloadClient(dev_agent.address, backoff=FAST) as client:
        with pytest.raises(UnimplementedError):
            next(client.watch_jwt_bundles())
        assert dev_agent.calls("FetchJWTBundles") == 1


def test_stream_end_reconnects(dev_agent: DevAgent) -> None:
    dev_agent.close_after_each_message("FetchX509SVID")
    errors: list[Exception] = []
    with WorkloadClient(dev_agent.address, backoff=FAST) as client:
        stream = client.watch_x509_contexts(on_error=errors.append)
        serials = {next(stream).default_svid.leaf.serial_number for _ in range(3)}
    assert len(serials) == 1  # same material re-delivered on each new stream
    assert dev_agent.streams_opened("FetchX509SVID") >= 3
    assert all(type(e).__name__ == "StreamEndedError" for e in errors)


def test_bad_message_is_skipped_and_stream_survives(dev_agent: DevAgent) -> None:
    errors: list[Exception] = []
    with WorkloadClient(dev_agent.address) as client:
        stream = client.watch_x509_contexts(on_error=errors.append)
        good = next(stream)
        dev_agent.push_raw(
            "FetchX509SVID", pb.X509SVIDResponse(svids=[pb.X509SVID(spiffe_id="spiffe://x/y")])
        )
        dev_agent.rotate()
        after = next(stream)
    assert after.default_svid.leaf.serial_number != good.default_svid.leaf.serial_number
    assert len(errors) == 1 and "empty trust bundle" in str(errors[0])
    assert dev_agent.streams_opened("FetchX509SVID") == 1


def test_socket_appears_later() -> None:
    directory = tempfile.mkdtemp(prefix="sb-", dir="/tmp")
    agent = DevAgent(os.path.join(directory, "agent.sock"))
    result: dict[str, Any] = {}
    with WorkloadClient(agent.address, timeout=20) as client:

        def fetch() -> None:
            result["ctx"] = client.fetch_x509_context()

        thread = threading.Thread(target=fetch)
        thread.start()
        try:
            assert not os.path.exists(agent.socket_path)
            agent.start()
            started = time.monotonic()
            thread.join(10)
            assert result["ctx"].svids
            assert time.monotonic() - started < 2.0  # picked up promptly, no long backoff
        finally:
            agent.stop()


def test_deadline_when_agent_never_answers(dev_agent: DevAgent) -> None:
    dev_agent.hang("FetchX509SVID")
    with WorkloadClient(dev_agent.address) as client, pytest.raises(DeadlineError, match="in time"):
        client.fetch_x509_context(timeout=0.3)
    dev_agent.hang("FetchX509SVID", False)


def test_permission_denied_on_fetch(dev_agent: DevAgent) -> None:
    dev_agent.deny()
    with (
        WorkloadClient(dev_agent.address) as client,
        pytest.raises(NoIdentityError, match="registration entry"),
    ):
        client.fetch_x509_context(timeout=5)


def test_close_ends_watch_quietly(dev_agent: DevAgent) -> None:
    client = WorkloadClient(dev_agent.address)
    stream = client.watch_x509_contexts()
    next(stream)
    done = threading.Event()

    def drain() -> None:
        for _ in stream:
            pass
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    dev_agent.wait_for_streams(1)
    client.close()
    assert done.wait(5)
