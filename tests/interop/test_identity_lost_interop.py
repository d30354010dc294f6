"""The registration entry is deleted: SPIRE ends the open streams with PermissionDenied.

Runs on its own deployment (``spire_factory``) with a single entry, because the test
process's uid selects every entry of a deployment and deleting them all would disturb
the shared one. Checked: the sources go IDENTITY_LOST (reads raise NoIdentityError),
each sidecar applies its ``on_identity_lost`` policy as docs/sidecar.md describes
(keep: files kept, ready; delete: files removed, not ready; unready: files kept, not
ready), one-shot mode gives up with exit code 4, and re-creating the entry brings
everything back with the newly minted SVID.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from interop_support import Health, SidecarProcess, StatusLog, agent_serials, pem_certs, snapshot, wait_for
from spire import EntrySpec, SpireDeployment

from spiffe_bridge import AsyncX509Source, Backoff, NoIdentityError, SourceStatus, X509Context, X509Source
from spiffe_bridge.fileset import read_current

pytest_plugins = ("interop_support",)

POLICIES = ("keep", "delete", "unready")
#: The sidecar reconnects with its default backoff: up to 30 s between PermissionDenied retries.
RECOVERY_DEADLINE = 45.0


def config(d: SpireDeployment, health: Health, policy: str, extra: str = "") -> str:
    return (
        f'agent_address = "{d.socket_path}"\n'
        'cert_dir = "flat"\nsvid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "svid_bundle.pem"\n'
        'outputs = [{format = "combined", dir = "linked", layout = "symlink"}]\n'
        f'on_identity_lost = "{policy}"\n' + health.hcl + extra
    )


def on_disk(run: Path) -> tuple[int | None, int | None]:
    """Leaf serial of the flat pem file and the symlinked combined file (None when absent)."""
    flat = run / "flat" / "svid.pem"
    first = pem_certs(flat.read_bytes())[0].serial_number if flat.exists() else None
    try:
        combined = read_current(run / "linked", ["svid_combined.pem"])["svid_combined.pem"]
        second: int | None = pem_certs(combined)[0].serial_number
    except FileNotFoundError:
        second = None
    return first, second


def serial(ctx: X509Context) -> int:
    return ctx.default_svid.leaf.serial_number


async def test_identity_lost_policies_and_recovery(
    spire_factory: Callable[..., SpireDeployment], tmp_path: Path
) -> None:
    d = await asyncio.to_thread(
        spire_factory,
        trust_domain="lost.test",
        federated_trust_domain=None,
        entries=[EntrySpec("/workload/lost", hint="lost")],
        svid_ttl=600,  # no rotation during the test: every change on disk comes from the policy
    )
    sid = d.spiffe_id("/workload/lost")
    original = agent_serials(d)[sid]
    healths = {p: Health() for p in POLICIES}
    runs = {p: tmp_path / p for p in POLICIES}
    procs: dict[str, SidecarProcess] = {}
    fast = Backoff(initial=0.1, maximum=1.0)
    statuses = StatusLog()
    sync_source = async_source = None
    try:
        for policy in POLICIES:
            runs[policy].mkdir()
            (runs[policy] / "helper.conf").write_text(config(d, healths[policy], policy))
            procs[policy] = SidecarProcess(["-config", "helper.conf"], runs[policy])
        sync_source = X509Source(d.workload_api_address, backoff=fast, timeout=15)
        sync_source.state.add_status_listener(statuses)
        async_source = await AsyncX509Source(d.workload_api_address, backoff=fast, timeout=15).start()
        for policy in POLICIES:
            await asyncio.to_thread(
                wait_for,
                lambda p=policy: procs[p].alive() and healths[p].ready(),
                f"{policy} sidecar ready",
            )
            assert on_disk(runs[policy]) == (original, original)
        kept = {p: {n: snapshot(runs[p] / n) for n in ("flat", "linked")} for p in ("keep", "unready")}

        # -- the entry goes away --------------------------------------------------------------
        await asyncio.to_thread(d.delete_entry, d.entries[0])
        await asyncio.to_thread(statuses.wait, SourceStatus.IDENTITY_LOST)
        (tmp_path / "oneshot").mkdir()
        (tmp_path / "oneshot" / "helper.conf").write_text(
            config(d, Health(), "keep", 'daemon_mode = false\none_shot_timeout = "2s"\n')
        )
        oneshot = SidecarProcess(["-config", "helper.conf"], tmp_path / "oneshot")
        procs["oneshot"] = oneshot
        with pytest.raises(NoIdentityError):
            _ = sync_source.context
        assert isinstance(sync_source.last_error, NoIdentityError)
        assert sync_source.last_error.code == grpc.StatusCode.PERMISSION_DENIED
        await asyncio.to_thread(
            wait_for, lambda: async_source.status is SourceStatus.IDENTITY_LOST, "async source lost"
        )
        with pytest.raises(NoIdentityError):
            _ = async_source.context

        for policy in POLICIES:
            await asyncio.to_thread(
                wait_for, lambda p=policy: healths[p].body().get("identity") == "lost", f"{policy}: lost"
            )
        await asyncio.to_thread(wait_for, lambda: on_disk(runs["delete"]) == (None, None), "files deleted")
        assert not list((runs["delete"] / "flat").glob("svid*"))
        assert not (runs["delete"] / "linked" / "..data").exists()
        for policy, ready in (("keep", 200), ("delete", 503), ("unready", 503)):
            code, body = healths[policy].get("/ready")
            assert code == ready, (policy, body)
            assert body["health"]["streams"]["x509"]["last_error_code"] == "PERMISSION_DENIED"
        for policy in ("keep", "unready"):
            assert {n: snapshot(runs[policy] / n) for n in ("flat", "linked")} == kept[policy], policy

        # one-shot mode gives up with exit code 4 (no identity) at its deadline
        code = await asyncio.to_thread(oneshot.wait, 30)
        assert code == 4, oneshot.log
        assert "PERMISSION_DENIED" in oneshot.log or "no identity issued" in oneshot.log
        assert not (oneshot.cwd / "flat" / "svid.pem").exists()

        # -- the entry comes back -----------------------------------------------------------
        await asyncio.to_thread(d.create_entry, "/workload/lost", hint="lost")
        await asyncio.to_thread(d.wait_for_svids)
        restored = agent_serials(d)[sid]
        assert restored != original
        await asyncio.to_thread(sync_source.wait_for, lambda c: serial(c) == restored, 20)
        await asyncio.wait_for(async_source.wait_for(lambda c: serial(c) == restored), 20)
        for source in (sync_source, async_source):
            assert source.status is SourceStatus.READY
            assert source.svid().hint == "lost"
        for policy in POLICIES:
            try:
                await asyncio.to_thread(
                    wait_for,
                    lambda p=policy: (
                        healths[p].ready()
                        and healths[p].body()["identity"] == "present"
                        and on_disk(runs[p]) == (restored, restored)
                    ),
                    f"{policy} sidecar restored",
                    RECOVERY_DEADLINE,
                )
            except AssertionError as exc:
                detail = f"health: {healths[policy].get()}\nlog:\n{procs[policy].log[-4000:]}"
                raise AssertionError(f"{exc}\n{detail}") from None
        for policy in POLICIES:
            assert procs[policy].stop() == 0, (policy, procs[policy].log)
    finally:
        for proc in procs.values():
            proc.close()
        if sync_source is not None:
            sync_source.close()
        if async_source is not None:
            with contextlib.suppress(Exception):
                await async_source.close()
