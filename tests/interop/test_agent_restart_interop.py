"""The SPIRE agent is killed (SIGKILL) and restarted while streams are open.

While it is down, the sources keep the last good context (status RECONNECTING) and the
sidecar leaves its files exactly as they are: same bytes, same inodes, same ``..data``
target, still ready. When it returns, every client opens a new stream (SPIRE's restarted
agent mints fresh SVIDs, so the new serials prove the data came over the new stream)
and the sidecar writes them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from interop_support import Health, StatusLog, agent_serials, pem_certs, sidecar, snapshot, wait_for
from spire import SpireDeployment

from spiffe_bridge import AsyncX509Source, SourceStatus, X509Context, X509Source
from spiffe_bridge.fileset import read_current

pytest_plugins = ("interop_support",)

WEB = "/workload/web"


def serials(ctx: X509Context) -> dict[str, int]:
    return {str(s.spiffe_id): s.leaf.serial_number for s in ctx.svids}


def file_serials(run: Path) -> tuple[int, int]:
    """Leaf serial in the flat cert_dir and in the symlinked output (read through one ``..data``)."""
    flat = pem_certs((run / "flat" / "svid.pem").read_bytes())[0].serial_number
    linked = read_current(run / "linked", ["svid.pem"])["svid.pem"]
    return flat, pem_certs(linked)[0].serial_number


async def test_streams_recover_and_sidecar_files_stay_put_while_agent_is_down(
    spire: SpireDeployment, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    health = Health()
    conf = run / "helper.conf"
    conf.write_text(
        f'agent_address = "{spire.socket_path}"\n'
        'cert_dir = "flat"\nsvid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "svid_bundle.pem"\nhint = "web"\n'
        'outputs = [{format = "pem", dir = "linked", layout = "symlink"}]\n' + health.hcl
    )
    web = spire.spiffe_id(WEB)
    statuses = StatusLog()
    with sidecar(["-config", str(conf)], run) as proc:
        sync_source = X509Source(spire.workload_api_address, timeout=15)
        sync_source.state.add_status_listener(statuses)
        async_source = await AsyncX509Source(spire.workload_api_address, timeout=15).start()
        try:
            await asyncio.to_thread(wait_for, lambda: proc.alive() and health.ready(), "sidecar ready")

            await asyncio.to_thread(spire.kill_agent)
            await asyncio.to_thread(statuses.wait, SourceStatus.RECONNECTING)

            def sidecar_noticed(min_down: float) -> bool:
                stream = health.body()["streams"]["x509"]
                return (
                    stream["status"] == "reconnecting" and (stream["disconnected_seconds"] or 0) >= min_down
                )

            await asyncio.to_thread(wait_for, lambda: sidecar_noticed(0), "sidecar saw the agent go")
            held = sync_source.context  # the last good context is kept while reconnecting
            before = {d: snapshot(run / d) for d in ("flat", "linked")}
            assert file_serials(run) == (held.svid(hint="web").leaf.serial_number,) * 2
            # stay down a while: nothing may change on disk, the sidecar stays ready and live
            await asyncio.to_thread(wait_for, lambda: sidecar_noticed(3.0), "3 s of agent downtime")
            assert {d: snapshot(run / d) for d in ("flat", "linked")} == before
            assert health.get("/ready")[0] == 200 and health.get("/live")[0] == 200
            assert health.body()["identity"] == "present"
            assert sync_source.status is SourceStatus.RECONNECTING and sync_source.context is held
            assert async_source.status is SourceStatus.RECONNECTING
            assert serials(async_source.context) == serials(held)
            data_target = os.readlink(run / "linked" / "..data")

            mark = len(statuses.seen)
            await asyncio.to_thread(spire.start_agent)
            after = await asyncio.to_thread(agent_serials, spire)
            assert after[web] != serials(held)[web], "the restarted agent re-minted the SVIDs"

            # the sources are READY again, on a new stream that delivered the new SVIDs
            statuses.wait(SourceStatus.READY, after=mark)
            await asyncio.to_thread(sync_source.wait_for, lambda c: serials(c) == after, 20)
            await asyncio.wait_for(async_source.wait_for(lambda c: serials(c) == after), 20)
            for source in (sync_source, async_source):
                assert source.status is SourceStatus.READY
                assert source.state.reconnects >= 1

            # the sidecar follows: both directories hold the new SVID, switched atomically
            await asyncio.to_thread(
                wait_for, lambda: file_serials(run) == (after[web],) * 2, "new SVID on disk"
            )
            assert os.readlink(run / "linked" / "..data") != data_target
            assert (run / "flat" / "svid.pem").stat().st_ino != before["flat"]["svid.pem"][0]
            body = await asyncio.to_thread(health.body)
            assert body["streams"]["x509"]["status"] == "ready"
            assert body["streams"]["x509"]["reconnects"] >= 1
            assert health.ready()
            assert proc.stop() == 0, proc.log
        finally:
            sync_source.close()
            await async_source.close()
