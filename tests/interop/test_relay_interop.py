"""``spiffe_bridge.relay.Relay`` in front of the real SPIRE agent.

Through the relay, our client and py-spiffe see exactly what they see directly (same
DER, same bundles, same JWKS; JWT-SVID calls forwarded with SPIRE's answers unchanged);
``allow_hints`` filters SPIRE's SVIDs; and an agent restart is carried through on the
clients' open streams (docs/relay.md: kept open, last state served during the hold,
new state pushed on the same streams).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from interop_support import StatusLog, agent_serials, der_of, short_socket_dir, wait_for
from spiffe import WorkloadApiClient
from spire import SpireDeployment

from spiffe_bridge import InvalidArgumentError, SourceStatus, WorkloadClient, X509Context, X509Source
from spiffe_bridge.relay import Kind, Relay

pytest_plugins = ("interop_support",)

AUDIENCE = "interop-relay"


@pytest.fixture
def relay_factory(spire: SpireDeployment) -> Iterator[Any]:
    made: list[Relay] = []

    def make(**kwargs: Any) -> Relay:
        listen = f"unix://{short_socket_dir('sbr-')}/relay.sock"
        relay = Relay(spire.workload_api_address, listen, **kwargs).start()
        made.append(relay)
        for kind in Kind:
            relay.wait_serving(kind, timeout=15)
        return relay

    yield make
    for relay in made:
        relay.stop()


def ours(address: str) -> tuple[X509Context, Any, Any]:
    with WorkloadClient(address, timeout=15) as client:
        return client.fetch_x509_context(), client.fetch_x509_bundles(), client.fetch_jwt_bundles()


def theirs(address: str) -> tuple[Any, Any, Any]:
    with WorkloadApiClient(socket_path=address, default_timeout=15) as client:
        return client.fetch_x509_context(), client.fetch_x509_bundles(), client.fetch_jwt_bundles()


def our_view(ctx: X509Context, x509_bundles: Any, jwt_bundles: Any) -> tuple[Any, ...]:
    return (
        [(str(s.spiffe_id), s.hint, s.chain_der, s.key_der) for s in ctx.svids],
        {td.name: b.authorities_der for td, b in ctx.bundles.items()},
        sorted(td.name for td in ctx.federated),
        {td.name: b.authorities_der for td, b in x509_bundles.bundles.items()},
        {td.name: b.jwks for td, b in jwt_bundles.bundles.items()},  # the agent's JWKS bytes
    )


def their_view(ctx: Any, x509_bundles: Any, jwt_bundles: Any) -> tuple[Any, ...]:
    def bundle_map(bundle_set: Any) -> dict[str, set[bytes]]:
        return {b.trust_domain.name: {der_of(c) for c in b.x509_authorities} for b in bundle_set.bundles}

    return (
        [(str(s.spiffe_id), [der_of(c) for c in s.cert_chain]) for s in ctx.x509_svids],
        bundle_map(ctx.x509_bundle_set),
        bundle_map(x509_bundles),
        {b.trust_domain.name: sorted(b.jwt_authorities) for b in jwt_bundles.bundles},
    )


def test_clients_through_the_relay_see_what_the_agent_serves(
    spire: SpireDeployment, relay_factory: Any
) -> None:
    relay = relay_factory()
    for _ in range(3):
        direct, via = our_view(*ours(spire.workload_api_address)), our_view(*ours(relay.address))
        py_direct, py_via = (
            their_view(*theirs(spire.workload_api_address)),
            their_view(*theirs(relay.address)),
        )
        if direct == via and py_direct == py_via:
            break  # else a rotation landed between the fetches: fetch again
    assert via == direct
    assert py_via == py_direct
    # and the two clients agree with each other on the SVIDs
    assert [(sid, list(chain)) for sid, _hint, chain, _key in via[0]] == py_via[0]
    assert {s[0] for s in via[0]} == spire.expected_spiffe_ids and via[2] == [spire.federated_trust_domain]

    # FetchJWTSVID and ValidateJWTSVID are forwarded; SPIRE's answers come back unchanged
    web = spire.spiffe_id("/workload/web")
    with (
        WorkloadClient(relay.address, timeout=15) as through,
        WorkloadClient(spire.workload_api_address) as d,
    ):
        svid = through.fetch_jwt_svid(AUDIENCE, spiffe_id=web)
        assert svid.hint == "web"
        assert str(through.validate_jwt_svid(svid.token, AUDIENCE).spiffe_id) == web
        assert str(d.validate_jwt_svid(svid.token, AUDIENCE).spiffe_id) == web
        with pytest.raises(InvalidArgumentError, match="expected audience") as info:
            through.validate_jwt_svid(svid.token, "not-the-audience")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert {str(s.spiffe_id) for s in through.fetch_jwt_svids(AUDIENCE)} == spire.expected_spiffe_ids
    with WorkloadApiClient(socket_path=relay.address, default_timeout=15) as py:
        assert {str(s.spiffe_id) for s in py.fetch_jwt_svids({AUDIENCE})} == spire.expected_spiffe_ids
        py.validate_jwt_svid(svid.token, AUDIENCE)  # raises if the relay's answer were an error
    stats = relay.stats()
    assert stats.forwarded_calls >= 6 and stats.rejected_calls == 0


def test_relay_allow_hints_filters_spire_svids(spire: SpireDeployment, relay_factory: Any) -> None:
    relay = relay_factory(allow_hints=["db"])
    db = spire.spiffe_id("/workload/db")
    ctx, x509_bundles, _jwt = ours(relay.address)
    assert [(str(s.spiffe_id), s.hint) for s in ctx.svids] == [(db, "db")]
    # bundles are public: the own and the federated bundle still reach the client
    assert {td.name for td in ctx.bundles} == {spire.trust_domain, spire.federated_trust_domain}
    assert {td.name for td in x509_bundles.bundles} == {spire.trust_domain, spire.federated_trust_domain}
    with WorkloadClient(relay.address, timeout=15) as client:
        assert [str(s.spiffe_id) for s in client.fetch_jwt_svids(AUDIENCE)] == [db]
    with WorkloadApiClient(socket_path=relay.address, default_timeout=15) as py:
        assert str(py.fetch_x509_svid().spiffe_id) == db  # the default SVID downstream


def test_relay_carries_its_clients_through_an_agent_restart(
    spire: SpireDeployment, relay_factory: Any
) -> None:
    relay = relay_factory()
    statuses = StatusLog()
    py_updates: list[Any] = []
    py_errors: list[Exception] = []
    cond = threading.Condition()

    def on_success(ctx: Any) -> None:
        with cond:
            py_updates.append({str(s.spiffe_id): s.leaf.serial_number for s in ctx.x509_svids})
            cond.notify_all()

    def on_error(exc: Exception) -> None:
        with cond:
            py_errors.append(exc)
            cond.notify_all()

    py_client = WorkloadApiClient(socket_path=relay.address)
    handle = py_client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    source = X509Source(relay.address, timeout=15)
    source.state.add_status_listener(statuses)
    try:
        with cond:
            assert cond.wait_for(lambda: py_updates or py_errors, 15) and not py_errors, py_errors

        spire.kill_agent()
        wait_for(lambda: relay.stats().feeds[Kind.X509_SVID.value].status == "holding", "relay holding")
        # during the hold the clients' streams stay open and serve the last state
        assert source.status is SourceStatus.READY and statuses.seen == []
        with WorkloadClient(relay.address, timeout=5) as late:
            assert late.fetch_x509_context().digest == source.context.digest

        spire.start_agent()
        after = agent_serials(spire)

        def serials(ctx: X509Context) -> dict[str, int]:
            return {str(s.spiffe_id): s.leaf.serial_number for s in ctx.svids}

        source.wait_for(lambda ctx: serials(ctx) == after, 20)
        with cond:
            assert cond.wait_for(lambda: after in py_updates or py_errors, 20), py_updates
            assert not py_errors, py_errors  # py-spiffe's stream (no retries) was never ended
        # our source never saw its stream end either: the relay carried it through
        assert source.state.reconnects == 0 and statuses.seen == []
        assert relay.stats().feeds[Kind.X509_SVID.value].status == "serving"
        with WorkloadClient(relay.address, timeout=15) as late:
            assert serials(late.fetch_x509_context()) == after
    finally:
        handle.cancel()
        py_client.close()
        source.close()
