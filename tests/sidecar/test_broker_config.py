"""The broker-mode configuration keys of issue #21: ``[broker]`` and per-output workload references."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spiffe_bridge.sidecar.config import BrokerConfig, ConfigError, build, parse_text

TOML = """
agent_address = "unix:///run/spire/agent/public/api.sock"
[broker]
address = "unix:///run/spire/agent/broker/broker.sock"
spiffe_id = "spiffe://example.org/node-bridge"
[[outputs]]
format = "pem"
dir = "/etc/nginx/spiffe"
workload_pid_file = "/run/nginx.pid"
[[outputs]]
format = "pem"
dir = "/etc/pg/spiffe"
workload_pid = 1234
[[outputs]]
format = "pem"
dir = "/etc/bridge"
"""

HCL = """
agent_address = "unix:///run/spire/agent/public/api.sock"
broker {
    address = "unix:///run/spire/agent/broker/broker.sock"
    spiffe_id = "spiffe://example.org/node-bridge"
}
outputs = [
    { format = "pem", dir = "/etc/nginx/spiffe", workload_pid_file = "/run/nginx.pid" },
    { format = "pem", dir = "/etc/pg/spiffe", workload_pid = 1234 },
    { format = "pem", dir = "/etc/bridge" },
]
"""


@pytest.mark.parametrize(("text", "kind"), [(TOML, "toml"), (HCL, "hcl")])
def test_broker_block_and_workload_references(text: str, kind: str) -> None:
    config = build(parse_text(text, kind), environ={})
    assert config.broker == BrokerConfig(
        "unix:///run/spire/agent/broker/broker.sock", "spiffe://example.org/node-bridge"
    )
    nginx, pg, own = config.outputs
    assert (nginx.workload_pid_file, nginx.workload_pid, nginx.workload) == ("/run/nginx.pid", None, True)
    assert (pg.workload_pid_file, pg.workload_pid, pg.workload) == ("", 1234, True)
    assert not own.workload  # outputs without a reference keep the bridge's own SVID
    for out in config.outputs:  # the reference is not handed to the format as an option
        assert "workload_pid" not in out.options and "workload_pid_file" not in out.options


def _error(text: str, kind: str = "toml") -> str:
    with pytest.raises(ConfigError) as info:
        build(parse_text(text, kind), environ={})
    return str(info.value)


def test_a_workload_reference_needs_the_broker_block() -> None:
    message = _error('[[outputs]]\nformat = "pem"\ndir = "/d"\nworkload_pid = 7\n')
    assert "outputs[0].workload_pid" in message and "line 4" in message and "'broker'" in message


def test_broker_block_errors_name_the_key() -> None:
    base = '[[outputs]]\nformat = "pem"\ndir = "/d"\nworkload_pid = 7\n'
    assert "'address' is required" in _error(base + '[broker]\nspiffe_id = "spiffe://example.org/b"\n')
    assert "broker.address" in _error(base + '[broker]\naddress = "http://x"\n')
    assert "broker.spiffe_id" in _error(base + '[broker]\naddress = "unix:///b.sock"\nspiffe_id = "nope"\n')
    assert "broker.agent_id" in _error(
        base + '[broker]\naddress = "unix:///b.sock"\nagent_id = "spiffe://"\n'
    )
    both = '[broker]\naddress = "unix:///b.sock"\nspiffe_id = "spiffe://e.org/b"\nhint = "b"\n'
    assert "not both" in _error(base + both)
    assert "unknown key" in _error(base + '[broker]\naddress = "unix:///b.sock"\nadress = "x"\n')


def test_one_reference_per_output_and_a_real_pid() -> None:
    broker = '[broker]\naddress = "unix:///b.sock"\n'
    two = '[[outputs]]\nformat = "pem"\ndir = "/d"\nworkload_pid = 7\nworkload_pid_file = "/run/x.pid"\n'
    assert "not both" in _error(broker + two)
    assert "not a process ID" in _error(
        broker + '[[outputs]]\nformat = "pem"\ndir = "/d"\nworkload_pid = 0\n'
    )
    assert "outputs[0].workload_pid" in _error(
        broker + '[[outputs]]\nformat = "pem"\ndir = "/d"\nworkload_pid = "x"\n'
    )


def test_no_broker_block_is_the_default() -> None:
    config = build(parse_text('[[outputs]]\nformat = "pem"\ndir = "/d"\n', "toml"), environ={})
    assert config.broker is None and not config.outputs[0].workload


def test_workload_outputs_get_their_own_plans() -> None:
    from spiffe_bridge.sidecar import plan

    text = TOML.replace('dir = "/etc/pg/spiffe"', 'dir = "/etc/nginx/spiffe"')
    with pytest.raises(ConfigError, match="different workloads"):
        plan.build(build(parse_text(text, "toml"), environ={}), {})
    plans, _ = plan.build(build(parse_text(TOML, "toml"), environ={}), {})
    assert [(p.directory, p.workload) for p in plans] == [
        ("/etc/nginx/spiffe", 0),
        ("/etc/pg/spiffe", 1),
        ("/etc/bridge", None),
    ]


def test_pid_file_reader_never_blocks_and_takes_only_a_pid(tmp_path: Path) -> None:
    from spiffe_bridge.sidecar.broker_outputs import read_pid_file

    f = tmp_path / "x.pid"
    for text, want in (("1234\n", 1234), (" 42 ", 42), ("", None), ("abc", None), ("0", None), ("-3", None)):
        f.write_text(text)
        assert read_pid_file(str(f)) == want, text
    f.write_text("1" * 100)
    assert read_pid_file(str(f)) is None
    assert read_pid_file(str(tmp_path / "missing.pid")) is None
    fifo = tmp_path / "fifo.pid"
    os.mkfifo(fifo)
    assert read_pid_file(str(fifo)) is None  # opened non-blocking, refused as not a regular file
    assert read_pid_file(str(tmp_path)) is None


def test_the_top_level_hint_is_the_bridges_not_the_workloads() -> None:
    """``hint`` picks among the bridge's own SVIDs; a workload output takes its workload's default SVID."""
    from spiffe_bridge.sidecar import plan

    config = build(parse_text('hint = "bridge"\n' + TOML, "toml"), environ={})
    plans = {p.directory: p for p in plan.build(config, {})[0]}
    assert plans["/etc/nginx/spiffe"].x509[0].options.hint is None
    assert plans["/etc/pg/spiffe"].x509[0].options.hint is None
    assert plans["/etc/bridge"].x509[0].options.hint == "bridge"
    text = TOML.replace("workload_pid = 1234\n", 'workload_pid = 1234\nhint = "db"\n')
    pg = {p.directory: p for p in plan.build(build(parse_text(text, "toml"), environ={}), {})[0]}[
        "/etc/pg/spiffe"
    ]
    assert pg.x509[0].options.hint == "db"  # an output's own hint still applies


WORKLOAD_JWT = """
[broker]
address = "unix:///b.sock"
[[outputs]]
format = "pem"
dir = "/etc/api"
workload_pid = 7
jwt_svids = [{ jwt_audience = "db", jwt_extra_audiences = ["cache"], jwt_svid_file_name = "db.token" }]
"""


def test_a_workload_output_takes_jwt_svids_with_the_top_level_keys() -> None:
    from spiffe_bridge.sidecar import plan
    from spiffe_bridge.sidecar.config import JwtSvidConfig

    config = build(parse_text(WORKLOAD_JWT, "toml"), environ={})
    (out,) = config.outputs
    assert out.jwt_svids == (JwtSvidConfig("db", ("cache",), "db.token"),)
    assert "jwt_svids" not in out.options and not config.jwt_svids  # not the bridge's own tokens
    ((p,), _) = plan.build(config, {})
    assert p.workload == 0 and p.jwt_svids == list(out.jwt_svids)
    assert p.jwt_options is not None and p.jwt_options.jwt_svid_file_mode == 0o600
    assert not p.wants_jwt_bundle  # only the tokens; the bundle is not the workload's to get here


def test_jwt_svids_on_an_output_need_a_workload_and_their_own_file_names() -> None:
    from spiffe_bridge.sidecar import plan

    own = WORKLOAD_JWT.replace("workload_pid = 7\n", "")
    message = _error(own)
    assert "outputs[0].jwt_svids" in message and "line 7" in message and "top-level 'jwt_svids'" in message
    assert "'jwt_audience' is required in 'outputs[0].jwt_svids[0]'" in _error(
        WORKLOAD_JWT.replace('jwt_audience = "db", ', "")
    )
    assert "unknown key" in _error(WORKLOAD_JWT.replace("jwt_audience", "jwt_audiance"))
    for clash in ("svid.pem", "svid_key.pem", "svid_bundle.pem"):
        config = build(parse_text(WORKLOAD_JWT.replace("db.token", clash), "toml"), environ={})
        with pytest.raises(ConfigError) as info:
            plan.build(config, {})
        assert "jwt_svids[0].jwt_svid_file_name" in str(info.value) and "(line 8)" in str(info.value)
        assert repr(clash) in str(info.value)
    twice = WORKLOAD_JWT.replace("}]", '}, { jwt_audience = "x", jwt_svid_file_name = "db.token" }]')
    with pytest.raises(ConfigError, match=r"jwt_svids\[1\]\.jwt_svid_file_name"):
        plan.build(build(parse_text(twice, "toml"), environ={}), {})
    combined = WORKLOAD_JWT.replace('"pem"', '"combined"').replace("db.token", "svid_combined.pem")
    with pytest.raises(ConfigError, match="combined_file_name"):
        plan.build(build(parse_text(combined, "toml"), environ={}), {})
