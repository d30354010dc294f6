"""The asyncio client behaves like the sync one (same core); spot-check every RPC and retry."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from spiffe_bridge import AsyncWorkloadClient
from spiffe_bridge.client import X509_CONTEXTS, unvalidated
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import InvalidArgumentError, NoIdentityError, ValidationError
from spiffe_bridge.retry import Backoff

FAST = Backoff(initial=0.01, maximum=0.05)


@pytest.mark.dev_agent(identities=["spiffe://example.org/web#web"], federate_with=["partner.test"])
async def test_every_rpc(dev_agent: DevAgent) -> None:
    async with AsyncWorkloadClient(dev_agent.address) as client:
        ctx = await client.fetch_x509_context()
        assert ctx.svid(hint="web").spiffe_id == ctx.default_svid.spiffe_id
        assert ctx.bundle_for("partner.test") is not None
        bundles = await client.fetch_x509_bundles()
        assert {td.name for td in bundles.bundles} == {"example.org", "partner.test"}
        svid = await client.fetch_jwt_svid("svc")
        jwt_bundles = await client.fetch_jwt_bundles()
        assert jwt_bundles.validate(svid.token, "svc").spiffe_id == svid.spiffe_id
        assert (await client.validate_jwt_svid(svid.token, "svc")).spiffe_id == svid.spiffe_id


async def test_watch_rotation_and_retry(dev_agent: DevAgent) -> None:
    errors: list[Exception] = []
    dev_agent.fail_next("FetchX509SVID", grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
    async with AsyncWorkloadClient(dev_agent.address, backoff=FAST) as client:
        stream = client.watch_x509_contexts(on_error=errors.append)
        first = await anext(stream)
        assert isinstance(errors[0], NoIdentityError)
        await asyncio.to_thread(dev_agent.rotate)
        second = await asyncio.wait_for(anext(stream), 10)
        assert first.default_svid.leaf.serial_number != second.default_svid.leaf.serial_number
        await stream.aclose()


async def test_watch_survives_agent_restart(dev_agent: DevAgent) -> None:
    async with AsyncWorkloadClient(dev_agent.address, backoff=FAST) as client:
        stream = client.watch_jwt_bundles()
        before = await anext(stream)
        await asyncio.to_thread(dev_agent.restart)
        await asyncio.to_thread(dev_agent.rotate_jwt_bundle)
        after = await asyncio.wait_for(anext(stream), 10)
        assert after.digest != before.digest
        await stream.aclose()


async def test_invalid_argument_stops(dev_agent: DevAgent) -> None:
    dev_agent.fail_next("FetchX509Bundles", grpc.StatusCode.INVALID_ARGUMENT, "bad")
    async with AsyncWorkloadClient(dev_agent.address, backoff=FAST) as client:
        with pytest.raises(InvalidArgumentError):
            await anext(client.watch_x509_bundles())


async def test_unvalidated_watch_hands_over_the_agents_bytes(dev_agent: DevAgent) -> None:
    """What relays use: the exact bytes plus the parsed message; undecodable bytes are skipped."""
    errors: list[Exception] = []
    async with AsyncWorkloadClient(dev_agent.address, backoff=FAST) as client:
        stream = client.watch(unvalidated(X509_CONTEXTS), on_error=errors.append)
        first = await anext(stream)
        assert first.data == dev_agent.x509_svid_response().SerializeToString()
        assert X509_CONTEXTS.decode(first.message).default_svid.leaf.serial_number == (
            dev_agent.svids[0].serial_number
        )
        await asyncio.to_thread(dev_agent.push_raw, "FetchX509SVID", b"\xff\xff not protobuf")
        await asyncio.to_thread(dev_agent.rotate)
        second = await asyncio.wait_for(anext(stream), 10)  # the garbage was skipped, not yielded
        assert second.data == dev_agent.x509_svid_response().SerializeToString()
        assert [type(e) for e in errors] == [ValidationError]
        await stream.aclose()
    with pytest.raises(ValueError, match="already hands over bytes"):
        unvalidated(unvalidated(X509_CONTEXTS))
