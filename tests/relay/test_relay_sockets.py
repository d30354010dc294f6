"""Several sockets on one relay: each with its own allow-list, all fed by one upstream stream per kind."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest
from _support.pki import key_der
from relay_helpers import RawStream, serials

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.ca import generate_private_key
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Relay
from spiffe_bridge.relay.listener import Listener

WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"
TWO = pytest.mark.dev_agent(identities=[f"{WEB}#web", f"{DB}#db"])


def _ids(address: str) -> list[str]:
    with WorkloadClient(address) as client:
        return [str(s.spiffe_id) for s in client.fetch_x509_context().svids]


@TWO
def test_each_socket_shows_its_own_identity(dev_agent: DevAgent, tmp_short: str) -> None:
    web = Listener.of(f"unix://{tmp_short}/web.sock", allow_ids=[WEB], socket_mode=0o600)
    db = Listener.of(f"unix://{tmp_short}/db.sock", allow_hints=["db"])
    everything = Listener.of(f"unix://{tmp_short}/all.sock")
    with Relay(dev_agent.address, [web, db, everything]) as relay:
        for listener in relay.listeners:
            relay.wait_serving(listen=listener.address)
        assert (
            _ids(web.address) == [WEB] and _ids(db.address) == [DB] and _ids(everything.address) == [WEB, DB]
        )
        assert os.stat(web.path).st_mode & 0o777 == 0o600
        assert dev_agent.streams_opened("FetchX509SVID") == 1  # one upstream stream for all three

        streams = [RawStream("unix:" + item.path) for item in (web, db, everything)]
        try:
            for stream in streams:
                stream.next()
            rotated = {m.spiffe_id: m.serial_number for m in dev_agent.rotate()}
            assert serials(streams[0].next()) == [rotated[WEB]]
            assert serials(streams[1].next()) == [rotated[DB]]
            assert serials(streams[2].next()) == [rotated[WEB], rotated[DB]]
        finally:
            for stream in streams:
                stream.close()
        assert [s.socket for s in relay.all_stats()] == [web.path, db.path, everything.path]
        assert relay.stats(db.address).feeds["FetchX509SVID"].messages_sent >= 2


@TWO
def test_an_invalid_update_is_taken_back_on_every_socket(dev_agent: DevAgent, tmp_short: str) -> None:
    web = Listener.of(f"unix://{tmp_short}/web.sock", allow_ids=[WEB])
    everything = Listener.of(f"unix://{tmp_short}/all.sock")
    with Relay(dev_agent.address, [web, everything], forward_before_verify=True) as relay:
        relay.wait_serving()
        streams = [RawStream("unix:" + item.path) for item in (web, everything)]
        try:
            firsts = [stream.next() for stream in streams]
            bad = dev_agent.x509_svid_response()
            bad.svids[0].x509_svid_key = key_der(generate_private_key())
            assert dev_agent.push_raw("FetchX509SVID", bad) == 1
            for stream, first in zip(streams, firsts, strict=True):
                assert stream.next() != first  # the (filtered) bad update, handed on at once
                assert stream.next() == first  # and taken back
        finally:
            for stream in streams:
                stream.close()
        assert [s.feeds["FetchX509SVID"].invalid_updates for s in relay.all_stats()] == [1, 1]


@TWO
def test_a_socket_allowed_nothing_is_denied_while_others_serve(dev_agent: DevAgent, tmp_short: str) -> None:
    web = Listener.of(f"unix://{tmp_short}/web.sock", allow_ids=[WEB])
    nobody = Listener.of(f"unix://{tmp_short}/nobody.sock", allow_ids=["spiffe://example.org/nobody"])
    with Relay(dev_agent.address, [web, nobody]) as relay:
        relay.wait_serving()
        denied = RawStream("unix:" + nobody.path)
        try:
            assert denied.status() is grpc.StatusCode.PERMISSION_DENIED
        finally:
            denied.close()
        assert _ids(web.address) == [WEB]


def test_listener_options_are_checked(dev_agent: DevAgent, tmp_short: str) -> None:
    one = Listener.parse(f"unix://{tmp_short}/a.sock,id={WEB},hint=db,mode=0640")
    assert one.path == f"{tmp_short}/a.sock" and one.mode == 0o640
    assert one.filter.ids == frozenset({WEB}) and one.filter.hints == frozenset({"db"})
    for bad in (f"unix://{tmp_short}/a.sock,colour=red", f"unix://{tmp_short}/a.sock,id", "tcp://1.2.3.4:5"):
        with pytest.raises(ValueError):
            Listener.parse(bad)
    same = Listener.of(f"unix://{tmp_short}/a.sock")
    with pytest.raises(ValueError, match="listed twice"):
        Relay(dev_agent.address, [same, same])
    with pytest.raises(ValueError, match="per Listener"):
        Relay(dev_agent.address, [same], allow_ids=[WEB])


@TWO
def test_cli_serves_several_sockets(dev_agent: DevAgent, tmp_short: str) -> None:
    web, db = f"unix://{tmp_short}/web.sock", f"unix://{tmp_short}/db.sock"
    cmd = [sys.executable, "-m", "spiffe_bridge", "relay", "--upstream", dev_agent.address]
    cmd += ["--listen", f"{web},id={WEB},mode=0660", "--listen", db, "--allow-hint", "db"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert [line.split()[2] for line in lines] == [web, db], lines
        assert _ids(web) == [WEB]
        assert _ids(db) == [DB]  # the --allow-hint flag applies to the socket without its own
        assert os.stat(f"{tmp_short}/web.sock").st_mode & 0o777 == 0o660
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.run(
        [*cmd[:6], "--listen", f"{web},colour=red"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "unknown option 'colour'" in done.stderr
