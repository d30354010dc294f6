"""The Broker API clients against a real SPIRE 1.15.3 agent with its broker endpoint on (#21).

One bridge (this process, SVID ``/node-bridge``) fetches the identities of
workload processes running under other uids, by PID, over mutual TLS.
"""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from broker_support import BROKER_PATH, NOT_A_BROKER_PATH, Workload, broker_spire, workload
from cryptography import x509
from interop_support import sidecar, spiffe_id_of, wait_for
from spire import SpireDeployment

from spiffe_bridge._proto import brokerapi_pb2 as bpb
from spiffe_bridge.broker import AsyncBrokerClient, BrokerClient, TlsTunnel, WorkloadPIDReference
from spiffe_bridge.broker._core import broker_ssl_context
from spiffe_bridge.broker.tunnel import LoopThread
from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.errors import (
    BrokerTlsError,
    NoIdentityError,
    WorkloadApiError,
    WorkloadExitedError,
    WorkloadNotEntitledError,
)
from spiffe_bridge.sidecar.broker_outputs import Issued, WorkloadUpdate, fetch_once, workload_updates
from spiffe_bridge.sidecar.config import Config, build, parse_text
from spiffe_bridge.sources import AsyncX509Source, X509Source
from spiffe_bridge.tls import PeerNotAuthorizedError
from spiffe_bridge.x509context import X509Context

__all__ = ["broker_spire"]  # the module-scoped deployment fixture

DEADLINE = 30.0


def _client(d: SpireDeployment, source: X509Source, **kwargs: Any) -> BrokerClient:
    kwargs.setdefault("agent", f"spiffe://{d.trust_domain}")
    kwargs.setdefault("spiffe_id", d.spiffe_id(BROKER_PATH))
    return BrokerClient(d.broker_address, source, timeout=10, **kwargs)


def _issued(client: BrokerClient, pid: int, spiffe_id: str) -> X509Context:
    """The workload's context once the agent has synced its entry (SPIRE answers no SVIDs until then)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            ctx = client.fetch_x509_context(pid)
            if str(ctx.default_svid.spiffe_id) == spiffe_id:
                return ctx
        except WorkloadNotEntitledError:
            pass
        assert time.monotonic() < deadline, f"pid {pid} never got {spiffe_id}"
        time.sleep(0.2)


@pytest.fixture
def source(broker_spire: SpireDeployment) -> Any:
    with X509Source(broker_spire.workload_api_address, timeout=DEADLINE) as src:
        yield src


def test_two_workloads_under_different_uids_get_their_own_svids(
    broker_spire: SpireDeployment, source: X509Source
) -> None:
    d = broker_spire
    a = d.create_entry("/wl/a", selectors=["unix:uid:1001"])
    b = d.create_entry("/wl/b", selectors=["unix:uid:1002"])
    try:
        with workload(1001) as wa, workload(1002) as wb, _client(d, source) as client:
            ctx_a = _issued(client, wa.pid, a.spiffe_id)
            ctx_b = _issued(client, wb.pid, b.spiffe_id)
            assert [str(s.spiffe_id) for s in ctx_a.svids] == [a.spiffe_id]
            assert [str(s.spiffe_id) for s in ctx_b.svids] == [b.spiffe_id]
            assert ctx_a.default_svid.key_pem != ctx_b.default_svid.key_pem
            # the bridge's own identities stay its own: never handed out for a workload
            own = {str(s.spiffe_id) for s in source.context.svids}
            assert own == {d.spiffe_id(BROKER_PATH), d.spiffe_id(NOT_A_BROKER_PATH)}
            assert own.isdisjoint({a.spiffe_id, b.spiffe_id})
            # the agent authenticated as a member of the trust domain: its own agent SVID
            assert client.agent_id is not None
            assert str(client.agent_id).startswith(f"spiffe://{d.trust_domain}/spire/agent/")
            # the other profiles, for the same reference
            token = client.fetch_jwt_svid(WorkloadPIDReference(wb.pid), "broker-test")
            assert str(token.spiffe_id) == b.spiffe_id and token.audience == ("broker-test",)
            jwt_bundles = client.fetch_jwt_bundles(wa.pid)
            assert {str(td) for td in jwt_bundles.bundles} == {d.trust_domain}
            assert str(jwt_bundles.validate(token.token, "broker-test").spiffe_id) == b.spiffe_id
            x509_bundles = client.fetch_x509_bundles(wa.pid)
            assert [str(td) for td in x509_bundles.bundles] == [d.trust_domain]
    finally:
        d.delete_entry(a)
        d.delete_entry(b)


def test_replaced_workload_process(broker_spire: SpireDeployment, source: X509Source) -> None:
    d = broker_spire
    a = d.create_entry("/wl/replaced", selectors=["unix:uid:1004"])
    ended: list[BaseException] = []
    seen: list[X509Context] = []
    try:
        with _client(d, source) as client:
            with workload(1004) as old:
                first = _issued(client, old.pid, a.spiffe_id)

                def follow() -> None:
                    try:
                        for ctx in client.watch_x509_contexts(old.pid):
                            seen.append(ctx)
                    except BaseException as exc:
                        ended.append(exc)

                thread = threading.Thread(target=follow, daemon=True)
                thread.start()
                wait_for(lambda: seen, "the watch's first update")
            # the process is gone: the agent keeps the stream open but silent; the watch ends itself
            thread.join(DEADLINE)
            assert not thread.is_alive(), "the watch on the exited PID kept running"
            assert len(ended) == 1 and isinstance(ended[0], WorkloadExitedError), ended
            assert isinstance(ended[0], NoIdentityError) and f"pid {old.pid}" in str(ended[0])
            with pytest.raises(WorkloadApiError, match="does not exist"):
                client.fetch_x509_context(old.pid, timeout=5)
            # the replacement is a new reference, with the same registered identity and a fresh key
            with workload(1004) as new:
                assert new.pid != old.pid
                replaced = _issued(client, new.pid, a.spiffe_id)
                assert replaced.default_svid.spiffe_id == first.default_svid.spiffe_id
                got: list[X509Context] = []
                for ctx in client.watch_x509_contexts(new.pid):
                    got.append(ctx)
                    break
                assert str(got[0].default_svid.spiffe_id) == a.spiffe_id
    finally:
        d.delete_entry(a)


def test_workload_without_entry_is_no_identity(broker_spire: SpireDeployment, source: X509Source) -> None:
    d = broker_spire
    with workload(1003) as w, _client(d, source) as client:
        with pytest.raises(WorkloadNotEntitledError) as info:
            client.fetch_x509_context(w.pid)
        assert isinstance(info.value, NoIdentityError)
        assert f"pid {w.pid}" in str(info.value)
        # the watch keeps the stream and delivers once an entry is registered
        errors: list[Exception] = []
        seen: list[X509Context] = []
        stream = client.watch_x509_contexts(w.pid, on_error=errors.append)
        thread = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
        thread.start()
        wait_for(lambda: any(isinstance(e, WorkloadNotEntitledError) for e in errors), "a NoIdentity report")
        entry = d.create_entry("/wl/late", selectors=["unix:uid:1003"])
        try:
            wait_for(lambda: seen, "the SVID after the entry was created", timeout=DEADLINE)
            assert str(seen[0].default_svid.spiffe_id) == entry.spiffe_id
        finally:
            client.close()
            thread.join(10)
            d.delete_entry(entry)


def test_broker_missing_from_allow_list_is_refused(broker_spire: SpireDeployment, source: X509Source) -> None:
    d = broker_spire
    with workload(1005) as w, _client(d, source, spiffe_id=d.spiffe_id(NOT_A_BROKER_PATH)) as client:
        with pytest.raises(BrokerTlsError) as info:
            client.fetch_x509_context(w.pid, timeout=5)
        # the agent refused us at the TLS layer; we did not refuse it
        assert not isinstance(client._link.tunnel.last_error, PeerNotAuthorizedError)
        assert "no mutual TLS" in str(info.value)
        assert "allow-list" in str(info.value)


def test_agent_that_is_not_the_authorized_one_is_refused(
    broker_spire: SpireDeployment, source: X509Source
) -> None:
    d = broker_spire
    for agent in (f"spiffe://{d.trust_domain}/spire/agent/someone-else", "spiffe://other.test"):
        with workload(1005) as w, _client(d, source, agent=agent) as client:
            with pytest.raises(BrokerTlsError, match="is not the authorized agent") as info:
                client.fetch_x509_context(w.pid, timeout=5)
            assert isinstance(client._link.tunnel.last_error, PeerNotAuthorizedError)
            assert client.agent_id is None
            assert "not authorized" in str(info.value)


def test_agent_authorized_by_exact_spiffe_id(broker_spire: SpireDeployment, source: X509Source) -> None:
    d = broker_spire
    with _client(d, source) as probe:
        ctx = probe.fetch_x509_context(1)  # PID 1 runs as root: the bridge's own entries
        assert str(ctx.default_svid.spiffe_id).startswith(f"spiffe://{d.trust_domain}/")
        agent_id = probe.agent_id
    assert agent_id is not None
    with _client(d, source, agent=agent_id) as client:
        again = client.fetch_x509_context(1)
        assert [s.spiffe_id for s in again.svids] == [s.spiffe_id for s in ctx.svids]
        assert client.agent_id == agent_id


def test_security_header_is_enforced(broker_spire: SpireDeployment, source: X509Source) -> None:
    d = broker_spire
    context = broker_ssl_context(source, f"spiffe://{d.trust_domain}", d.spiffe_id(BROKER_PATH), None)
    tunnel = TlsTunnel(_endpoint(d), context)
    loop = LoopThread("test-tunnel")
    try:
        loop.run(tunnel.start())
        ref = WorkloadPIDReference(1).message()
        with grpc.insecure_channel(tunnel.grpc_target) as channel:
            call = channel.unary_stream(
                "/spiffe.broker.API/SubscribeToX509SVID",
                request_serializer=bpb.SubscribeToX509SVIDRequest.SerializeToString,
                response_deserializer=bpb.SubscribeToX509SVIDResponse.FromString,
            )
            request = bpb.SubscribeToX509SVIDRequest(reference=ref)
            with pytest.raises(grpc.RpcError) as info:
                next(iter(call(request, timeout=10, wait_for_ready=True)))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            for wrong in (("broker.spiffe.io", "True"), ("workload.spiffe.io", "true")):
                with pytest.raises(grpc.RpcError) as info:
                    next(iter(call(request, metadata=(wrong,), timeout=10)))
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            header = (("broker.spiffe.io", "true"),)
            stream = call(request, metadata=header, timeout=10)
            assert next(iter(stream)).svids
            stream.cancel()
            # with the header, a request without a reference is refused for that instead
            with pytest.raises(grpc.RpcError) as info:
                next(iter(call(bpb.SubscribeToX509SVIDRequest(), metadata=header, timeout=10)))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "header" not in (info.value.details() or "").lower()
    finally:
        loop.run(tunnel.close())
        loop.stop()
        context.close()


def test_async_client(broker_spire: SpireDeployment) -> None:
    d = broker_spire
    entry = d.create_entry("/wl/async", selectors=["unix:uid:1006"])

    async def main(w: Workload) -> X509Context:
        pid = w.pid
        async with (
            AsyncX509Source(d.workload_api_address) as src,
            AsyncBrokerClient(
                d.broker_address, src, agent=f"spiffe://{d.trust_domain}", hint="broker", timeout=10
            ) as client,
        ):
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    ctx = await client.fetch_x509_context(pid)
                    break
                except WorkloadNotEntitledError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            async for update in client.watch_x509_contexts(pid):
                assert update.default_svid.spiffe_id == ctx.default_svid.spiffe_id
                break
            svid = await client.fetch_jwt_svid(pid, "aud-async")
            assert str(svid.spiffe_id) == entry.spiffe_id
            # the process exits while watched: the async watch ends with WorkloadExitedError too
            seen: list[X509Context] = []

            async def follow() -> None:
                async for update in client.watch_x509_contexts(pid):
                    seen.append(update)
                    if len(seen) == 1:
                        w.stop()

            with pytest.raises(WorkloadExitedError, match=f"pid {pid}"):
                await asyncio.wait_for(follow(), DEADLINE)
            assert len(seen) == 1
            return ctx

    try:
        with workload(1006) as w:
            ctx = asyncio.run(main(w))
        assert str(ctx.default_svid.spiffe_id) == entry.spiffe_id
    finally:
        d.delete_entry(entry)


def _endpoint(d: SpireDeployment) -> Any:
    from spiffe_bridge.address import parse

    return parse(d.broker_address)


# -- the sidecar's broker outputs (spiffe_bridge.sidecar.broker_outputs) -----------------------


def _config(d: SpireDeployment, tmp: Path, outputs: str) -> Config:
    text = f"""
agent_address = "{d.workload_api_address}"
[broker]
address = "{d.broker_address}"
spiffe_id = "{d.spiffe_id(BROKER_PATH)}"
{outputs}
"""
    return build(parse_text(text, "toml"), environ={})


def test_sidecar_outputs_follow_their_workloads(broker_spire: SpireDeployment, tmp_path: Path) -> None:
    d = broker_spire
    by_file = d.create_entry("/wl/pidfile", selectors=["unix:uid:1007"])
    fixed = d.create_entry("/wl/fixed", selectors=["unix:uid:1008"])
    pid_file = tmp_path / "nginx.pid"
    with workload(1007) as first, workload(1008) as pinned, workload(1009) as unregistered:
        pid_file.write_text(f"{first.pid}\n")
        missing_file = tmp_path / "none.pid"
        missing_file.write_text(f"{unregistered.pid}\n")
        config = _config(
            d,
            tmp_path,
            f"""
[[outputs]]
format = "pem"
dir = "{tmp_path / "a"}"
workload_pid_file = "{pid_file}"
[[outputs]]
format = "pem"
dir = "{tmp_path / "b"}"
workload_pid = {pinned.pid}
[[outputs]]
format = "pem"
dir = "{tmp_path / "own"}"
[[outputs]]
format = "pem"
dir = "{tmp_path / "c"}"
workload_pid_file = "{missing_file}"
""",
        )

        async def main() -> tuple[WorkloadUpdate, Workload]:
            latest: dict[int, WorkloadUpdate] = {}
            async with AsyncX509Source(d.workload_api_address) as src:
                updates = workload_updates(config, src, poll_interval=0.1)

                def ready() -> bool:
                    a, b, c = latest.get(0), latest.get(1), latest.get(3)
                    return bool(
                        a and a.context and str(a.context.default_svid.spiffe_id) == by_file.spiffe_id
                        and b and b.context and str(b.context.default_svid.spiffe_id) == fixed.spiffe_id
                        and c and c.context is None and isinstance(c.error, NoIdentityError)
                    )  # fmt: skip

                async def until(condition: Any) -> None:
                    async for update in updates:
                        assert isinstance(update, WorkloadUpdate)  # no output here has jwt_svids
                        latest[update.index] = update
                        if condition():
                            return

                await asyncio.wait_for(until(ready), DEADLINE)
                assert 2 not in latest  # the output without a reference is not the broker's business
                # nginx is replaced: a new process, a new PID in the file, the old one gone
                second = Workload(1007)
                pid_file.write_text(f"{second.pid}\n")
                first.stop()

                def followed() -> bool:
                    a = latest[0]
                    return a.pid == second.pid and a.context is not None

                await asyncio.wait_for(until(followed), DEADLINE)
                await updates.aclose()
                return latest[0], second

        try:
            replaced, second = asyncio.run(main())
            try:
                assert str(replaced.context.default_svid.spiffe_id) == by_file.spiffe_id  # type: ignore[union-attr]

                # one-shot: the unregistered workload is NoIdentity (exit 4); without it, all are written
                async def once(cfg: Config) -> dict[int, Issued]:
                    async with AsyncX509Source(d.workload_api_address) as src:
                        return await fetch_once(cfg, src, timeout=2)

                with pytest.raises(NoIdentityError):
                    asyncio.run(once(config))
                registered = replace(config, outputs=config.outputs[:3])
                got = asyncio.run(once(registered))
                assert {i: str(c.context.default_svid.spiffe_id) for i, c in got.items()} == {
                    0: by_file.spiffe_id,
                    1: fixed.spiffe_id,
                }
            finally:
                second.stop()
        finally:
            d.delete_entry(by_file)
            d.delete_entry(fixed)


def _one_shot_conf(d: SpireDeployment) -> str:
    """A one-shot configuration up to its ``outputs``: agent and broker block."""
    return f"""daemon_mode = false
one_shot_timeout = "20s"
agent_address = "{d.workload_api_address}"
broker {{
  address = "{d.broker_address}"
  spiffe_id = "{d.spiffe_id(BROKER_PATH)}"
}}
"""


def test_one_shot_sidecar_writes_each_workloads_files_owned_by_its_uid(
    broker_spire: SpireDeployment, tmp_path: Path
) -> None:
    """``spiffe-bridge run`` (daemon_mode = false) writes nginx's and pg's SVIDs into their own dirs."""
    d = broker_spire
    web = d.create_entry("/wl/nginx", selectors=["unix:uid:1010"])
    db = d.create_entry("/wl/postgres", selectors=["unix:uid:1011"])
    try:
        with workload(1010) as nginx, workload(1011) as pg, workload(1012) as unknown:
            pid_file = tmp_path / "nginx.pid"
            pid_file.write_text(f"{nginx.pid}\n")
            head = _one_shot_conf(d)
            hcl = (
                head
                + f"""outputs = [
  {{ format = "pem", dir = "{tmp_path / "nginx"}", workload_pid_file = "{pid_file}",
     uid = 1010, gid = 1010 }},
  {{ format = "pem", dir = "{tmp_path / "pg"}", workload_pid = {pg.pid}, uid = 1011, gid = 1011 }},
  {{ format = "pem", dir = "{tmp_path / "own"}" }},
]
"""
            )
            (tmp_path / "broker.conf").write_text(hcl)
            with sidecar(["-config", str(tmp_path / "broker.conf")], tmp_path) as proc:
                assert proc.wait(60) == 0, proc.log
            for name, entry, uid in (("nginx", web, 1010), ("pg", db, 1011)):
                cert = x509.load_pem_x509_certificates((tmp_path / name / "svid.pem").read_bytes())[0]
                assert spiffe_id_of(cert) == entry.spiffe_id
                key = tmp_path / name / "svid_key.pem"
                st = key.stat()
                assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, uid, 0o600)
            own = x509.load_pem_x509_certificates((tmp_path / "own" / "svid.pem").read_bytes())[0]
            assert spiffe_id_of(own) in {d.spiffe_id(BROKER_PATH), d.spiffe_id(NOT_A_BROKER_PATH)}
            # a workload without an entry: exit 4, nothing written for it
            (tmp_path / "none.conf").write_text(
                head.replace('"20s"', '"3s"')
                + f'outputs = [{{ format = "pem", dir = "{tmp_path / "none"}", '
                + f"workload_pid = {unknown.pid} }}]\n"
            )
            with sidecar(["-config", str(tmp_path / "none.conf")], tmp_path) as proc:
                assert proc.wait(60) == 4, proc.log
            assert not (tmp_path / "none" / "svid.pem").exists()
            # daemon mode: tests/interop/test_broker_daemon_interop.py
    finally:
        d.delete_entry(web)
        d.delete_entry(db)


def test_one_shot_sidecar_writes_a_workloads_jwt_svid(broker_spire: SpireDeployment, tmp_path: Path) -> None:
    """``outputs[].jwt_svids`` in one-shot mode: the workload's token, once; exit 4 without an entry."""
    d = broker_spire
    api = d.create_entry("/wl/o-api", selectors=["unix:uid:1041"])
    try:
        with workload(1041) as proc_api, workload(1042) as unknown:
            head = _one_shot_conf(d)
            jwt = '[{ jwt_audience = "oneshot-test", jwt_svid_file_name = "tokens/api.token" }]'
            out = tmp_path / "api"
            conf = tmp_path / "api.conf"
            conf.write_text(
                head + f'outputs = [{{ format = "pem", dir = "{out}", workload_pid = {proc_api.pid}, '
                f"uid = 1041, gid = 1041, jwt_svids = {jwt} }}]\n"
            )
            with sidecar(["-config", str(conf)], tmp_path) as proc:
                assert proc.wait(60) == 0, proc.log
            token = (out / "tokens" / "api.token").read_text(encoding="ascii")
            with WorkloadClient(d.workload_api_address) as client:
                svid = client.fetch_jwt_bundles().validate(token, "oneshot-test")
            assert str(svid.spiffe_id) == api.spiffe_id  # sub: the workload, not the bridge
            st = (out / "tokens" / "api.token").stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1041, 1041, 0o600)
            assert spiffe_id_of(x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())[0]) == (
                api.spiffe_id
            )
            # a workload without an entry: exit 4 (no identity), no token written
            none = tmp_path / "none"
            conf.write_text(
                head.replace('"20s"', '"3s"')
                + f'outputs = [{{ format = "pem", dir = "{none}", workload_pid = {unknown.pid}, '
                f"jwt_svids = {jwt} }}]\n"
            )
            with sidecar(["-config", str(conf)], tmp_path) as proc:
                assert proc.wait(60) == 4, proc.log
            assert not (none / "tokens" / "api.token").exists()
    finally:
        d.delete_entry(api)
