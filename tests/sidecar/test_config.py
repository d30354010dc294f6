"""Configuration: every key, spiffe-helper's rules, unknown keys with lines, modes, env, formats."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from spiffe_bridge.sidecar import env_overrides as env_mod
from spiffe_bridge.sidecar.config import (
    DEFAULT_AGENT_ADDRESS,
    Config,
    ConfigError,
    build,
    load,
    parse_text,
    split_cmd_args,
)
from spiffe_bridge.sidecar.settings import TOP_KEYS

X509 = "\n".join(
    [
        'svid_file_name = "svid.pem"',
        'svid_key_file_name = "svid_key.pem"',
        'svid_bundle_file_name = "svid_bundle.pem"',
        "",
    ]
)


def cfg(text: str, environ: dict[str, str] | None = None, daemon_mode: bool | None = None) -> Config:
    return build(parse_text(text, "hcl"), environ=environ or {}, daemon_mode=daemon_mode)


def error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        cfg(text, environ)
    return str(info.value)


EVERY_KEY = """
agent_address = "unix:///run/spire/agent.sock"
cmd = "nginx"
cmd_args = "-g \\"daemon off;\\""
cert_dir = "/certs"
svid_file_name = "a.pem"
svid_key_file_name = "a_key.pem"
svid_bundle_file_name = "a_bundle.pem"
add_intermediates_to_bundle = true
include_federated_domains = true
omit_expired = true
hint = "internal"
jwt_svids = [{jwt_audience = "aud", jwt_extra_audiences = ["x", "y"], jwt_svid_file_name = "t.jwt"}]
jwt_bundle_file_name = "jwt_bundle.json"
cert_file_mode = 0640
key_file_mode = 0400
allow_shared_key_file_mode = true
jwt_bundle_file_mode = 0640
jwt_svid_file_mode = 0440
daemon_mode = true
pid_file_name = "/run/nginx.pid"
renew_signal = "SIGHUP"
health_checks {
  listener_enabled = true
  bind_port = 9000
  liveness_path = "/healthz"
  readiness_path = "/readyz"
}
outputs = [{format = "combined", dir = "/haproxy", layout = "flat", uid = 99, gid = 98,
            combined_file_name = "h.pem"}]
layout = "symlink"
federated_layout = "per-trust-domain"
log_level = "debug"
log_format = "json"
health_bind_address = "0.0.0.0"
health_max_disconnected = "2m"
health_max_stall = "3s"
metrics { enabled = true, path = "/prom" }
on_identity_lost = "delete"
one_shot_timeout = "1m30s"
reload_command = ["nginx", "-s", "reload"]
reload_command_timeout = "500ms"
pkcs12_password_file = "/secrets/p12"
pkcs12_password_env = "MY_P12"
broker {
  address = "unix:///run/spire/broker.sock"
  spiffe_id = "spiffe://example.org/node-bridge"
  agent_id = "spiffe://example.org/spire/agent/x"
}
"""


def test_every_key_is_read() -> None:
    text = EVERY_KEY.replace('one_shot_timeout = "1m30s"', 'one_shot_timeout = "90s"')
    c = cfg(text)
    assert c.agent_address == "unix:///run/spire/agent.sock"
    assert (c.cmd, c.cmd_args) == ("nginx", ("-g", "daemon off;"))
    assert c.cert_dir == "/certs"
    assert (c.svid_file_name, c.svid_key_file_name, c.svid_bundle_file_name) == (
        "a.pem",
        "a_key.pem",
        "a_bundle.pem",
    )
    assert c.add_intermediates_to_bundle and c.include_federated_domains and c.omit_expired
    assert c.hint == "internal"
    assert c.jwt_svids[0].audience == "aud" and c.jwt_svids[0].extra_audiences == ("x", "y")
    assert c.jwt_svids[0].file_name == "t.jwt"
    assert c.jwt_bundle_file_name == "jwt_bundle.json"
    assert (c.cert_file_mode, c.key_file_mode, c.jwt_bundle_file_mode, c.jwt_svid_file_mode) == (
        0o640, 0o400, 0o640, 0o440,
    )  # fmt: skip
    assert c.allow_shared_key_file_mode is True
    assert c.daemon_mode is True
    assert c.pid_file_name == "/run/nginx.pid" and c.renew_signal is signal.SIGHUP
    h = c.health
    assert (h.listener_enabled, h.bind_port, h.liveness_path, h.readiness_path) == (
        True,
        9000,
        "/healthz",
        "/readyz",
    )
    assert (h.bind_address, h.max_disconnected, h.max_stall) == ("0.0.0.0", 120.0, 3.0)
    out = c.outputs[0]
    assert (out.format, out.dir, out.layout, out.uid, out.gid) == ("combined", "/haproxy", "flat", 99, 98)
    assert c.broker is not None and c.broker.address == "unix:///run/spire/broker.sock"
    assert (c.broker.spiffe_id, c.broker.agent_id) == (
        "spiffe://example.org/node-bridge",
        "spiffe://example.org/spire/agent/x",
    )
    assert out.options == {"combined_file_name": "h.pem"}
    assert (c.layout, c.federated_layout, c.log_level, c.log_format) == (
        "symlink",
        "per-trust-domain",
        "debug",
        "json",
    )
    assert (c.metrics.enabled, c.metrics.path) == (True, "/prom")
    assert (c.on_identity_lost, c.one_shot_timeout) == ("delete", 90.0)
    assert c.reload_command == ("nginx", "-s", "reload") and c.reload_command_timeout == 0.5
    assert (c.pkcs12_password_file, c.pkcs12_password_env) == ("/secrets/p12", "MY_P12")
    assert c.warnings == ()


def test_every_schema_key_is_in_the_every_key_example() -> None:
    """Keeps test_every_key_is_read honest when a key is added to the table."""
    for key in TOP_KEYS:
        assert f"\n{key.name} " in EVERY_KEY, key.name
        for sub in key.fields:
            assert sub.name in EVERY_KEY or key.name == "outputs", f"{key.name}.{sub.name}"


def test_defaults_match_spiffe_helper() -> None:
    c = cfg(X509)
    assert c.agent_address == DEFAULT_AGENT_ADDRESS
    assert c.cert_dir == "" and c.daemon_mode is True
    assert (c.cert_file_mode, c.key_file_mode, c.jwt_bundle_file_mode, c.jwt_svid_file_mode) == (
        0o644, 0o600, 0o600, 0o600,
    )  # fmt: skip
    h = c.health
    assert (h.listener_enabled, h.bind_port, h.liveness_path, h.readiness_path) == (
        False,
        8081,
        "/live",
        "/ready",
    )
    assert h.bind_address == "127.0.0.1"  # ours: spiffe-helper binds every interface
    # ours: cert, key and bundle switch together by default (spiffe-helper writes in place)
    assert (c.layout, c.federated_layout, c.on_identity_lost, c.one_shot_timeout) == (
        "symlink",
        "merged",
        "keep",
        60.0,
    )
    assert c.renew_signal is None and c.cmd_args == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (X509 + "\n\nbogus_key = 1", "unknown key 'bogus_key' (line 6)"),
        (X509 + "agentAddress = \"/x\"", "did you mean 'agent_address'?"),
        (X509 + "jwt_svids = [{jwt_audience = \"a\", jwt_svid_file_name = \"f\", audience = \"x\"}]",
         "unknown key 'jwt_svids[0].audience' (line 4) in 'jwt_svids[0]'"),
        (X509 + "health_checks {\n  bind_prot = 1\n}", "unknown key 'health_checks.bind_prot' (line 5)"),
        (X509 + "metrics {\n enable = true\n}", "did you mean 'enabled'?"),
    ],
)  # fmt: skip
def test_unknown_keys_name_key_and_line(text: str, fragment: str) -> None:
    assert fragment in error(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('svid_file_name = "a"', "all or none of"),
        ('cert_dir = "x"', "nothing to write"),
        ('jwt_svids = [{jwt_audience = "a"}]', "'jwt_svid_file_name' is required in 'jwt_svids[0]'"),
        ('jwt_svids = [{jwt_svid_file_name = "f"}]', "'jwt_audience' is required"),
        (X509 + 'pid_file_name = "/p"', "needs 'renew_signal'"),
        (X509 + 'pid_file_name = "/p"\nrenew_signal = "HUP"\ndaemon_mode = false', "only supported in"),
        (X509 + 'renew_signal = "SIGNOPE"', "not a signal name"),
        (X509 + 'cmd_args = "x"', "'cmd' is not"),
        (X509 + "cert_file_mode = -1", "must be positive"),
        (X509 + 'cert_file_mode = "0999"', "octal mode"),
        (X509 + "daemon_mode = 1", "must be true or false"),
        (X509 + 'log_level = "loud"', "must be one of debug, info, warning, error"),
        (X509 + "one_shot_timeout = \"soon\"", "must be a duration"),
        (X509 + "reload_command = \"nginx -s reload\"", "must be a list of strings"),
        (X509 + "reload_command = []", "empty argv"),
        (X509 + 'agent_address = "relative/path"', "not absolute"),
        (X509 + 'agent_address = "http://x"', "unsupported scheme"),
        (X509 + "health_checks { bind_port = 70000 }", "not a TCP port"),
        (X509 + 'health_checks { liveness_path = "/x"\n readiness_path = "/x" }', "paths must"),
        ("outputs = [{dir = \"/x\"}]", "'format' is required"),
        ("outputs = [{format = \"pem\"}]", "'dir' is required"),
        (X509 + "outputs = [{format = \"pem\", dir = \"/x\", layout = \"tree\"}]", "one of symlink, flat"),
        ("agent_address = 5\n" + X509, "'agent_address' (line 1) must be a string"),
    ],
)  # fmt: skip
def test_validation_errors(text: str, fragment: str) -> None:
    assert fragment in error(text)


@pytest.mark.parametrize(
    ("value", "mode", "warns"),
    [
        ("0644", 0o644, False),
        ("420", 0o644, False),  # the decimal spelling of 0644: fine
        ("384", 0o600, False),
        ('"0644"', 0o644, False),  # strings are octal
        ('"644"', 0o644, False),
        ('"0o600"', 0o600, False),
        ("444", 444, True),  # spiffe-helper's own fixture: decimal 444 = 0o674
        ("644", 644 & 0o777, True),  # 0o1204: extra bits dropped, as Go does
        ("600", 600 & 0o777, True),
        ("0", 0o644, False),  # 0 means the default
    ],
)
def test_file_modes(value: str, mode: int, warns: bool) -> None:
    c = cfg(X509 + f"cert_file_mode = {value}")
    assert c.cert_file_mode == mode
    assert bool(c.warnings) == warns
    if warns:
        assert "'cert_file_mode' (line 4)" in c.warnings[0]
        assert f"write 0{value}" in c.warnings[0]


def test_one_shot_warnings_for_ignored_keys() -> None:
    c = cfg(
        X509 + 'cmd = "x"\nrenew_signal = "SIGHUP"\nhealth_checks { listener_enabled = true }',
        daemon_mode=False,
    )
    assert c.daemon_mode is False
    text = " ".join(c.warnings)
    assert "'cmd' (line 4) is ignored" in text and "'renew_signal'" in text and "health/metrics" in text


def test_daemon_mode_flag_overrides_file() -> None:
    assert cfg(X509 + "daemon_mode = false", daemon_mode=True).daemon_mode is True
    assert cfg(X509, daemon_mode=False).daemon_mode is False


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("server --listen localhost:8002", ("server", "--listen", "localhost:8002")),
        ('-c "a b" d', ("-c", "a b", "d")),
        ('"say ""hi"""', ('say "hi"',)),
        ("'not grouped'", ("'not", "grouped'")),  # single quotes do not group (spiffe-helper)
        ("a  b", ("a", "", "b")),  # consecutive spaces: an empty argument, as Go's csv reader does
        ("", ()),
    ],
)
def test_cmd_args_are_split_like_spiffe_helper(text: str, argv: tuple[str, ...]) -> None:
    assert split_cmd_args(text) == argv


@pytest.mark.parametrize("name", ["SIGUSR1", "USR1", "sigusr1", "10"])
def test_renew_signal_spellings(name: str) -> None:
    assert cfg(X509 + f'renew_signal = "{name}"').renew_signal is signal.SIGUSR1


class TestAddress:
    def test_endpoint_env_used_only_when_agent_address_unset(self) -> None:
        env = {"SPIFFE_ENDPOINT_SOCKET": "unix:///from/env.sock"}
        assert cfg(X509, env).agent_address == "unix:///from/env.sock"
        assert cfg(X509 + 'agent_address = "/explicit.sock"', env).agent_address == "/explicit.sock"

    def test_uri_is_not_prefixed_again(self) -> None:
        # spiffe-helper builds "unix://" + value, so a URI value became unix://unix:///...
        env = {"SPIFFE_ENDPOINT_SOCKET": "unix:///run/agent.sock"}
        assert cfg(X509, env).agent_address == "unix:///run/agent.sock"
        assert cfg(X509 + 'agent_address = "unix:///a.sock"').agent_address == "unix:///a.sock"

    def test_bad_env_address_is_named(self) -> None:
        assert "SPIFFE_ENDPOINT_SOCKET" in error(X509, {"SPIFFE_ENDPOINT_SOCKET": "nope"})


class TestEnvironment:
    def test_scalar_and_block_overrides(self) -> None:
        env = {
            "SPIFFE_BRIDGE_CERT_DIR": "/env/certs",
            "SPIFFE_BRIDGE_DAEMON_MODE": "false",
            "SPIFFE_BRIDGE_KEY_FILE_MODE": "0640",
            "SPIFFE_BRIDGE_ALLOW_SHARED_KEY_FILE_MODE": "true",  # 0640 on a key needs the opt-in
            "SPIFFE_BRIDGE_HEALTH_CHECKS_BIND_PORT": "9100",
            "SPIFFE_BRIDGE_HEALTH_CHECKS_LISTENER_ENABLED": "yes",
            "SPIFFE_BRIDGE_METRICS_ENABLED": "1",
            "SPIFFE_BRIDGE_ONE_SHOT_TIMEOUT": "5s",
            "SPIFFE_BRIDGE_RELOAD_COMMAND": '["nginx", "-s", "reload"]',
            "SPIFFE_BRIDGE_AGENT_ADDRESS": "/env.sock",
            "SPIFFE_BRIDGE_LOG_FORMAT": "json",
        }
        c = cfg(X509 + 'cert_dir = "/file"', env)
        assert c.cert_dir == "/env/certs" and c.daemon_mode is False and c.key_file_mode == 0o640
        assert c.health.bind_port == 9100 and c.health.listener_enabled and c.metrics.enabled
        assert c.one_shot_timeout == 5.0 and c.reload_command == ("nginx", "-s", "reload")
        assert c.agent_address == "/env.sock" and c.log_format == "json"

    def test_shell_words_for_argv_lists(self) -> None:
        c = cfg(X509, {"SPIFFE_BRIDGE_RELOAD_COMMAND": "sh -c 'kill -HUP 1'"})
        assert c.reload_command == ("sh", "-c", "kill -HUP 1")

    def test_bad_env_value_names_the_variable(self) -> None:
        assert "SPIFFE_BRIDGE_DAEMON_MODE" in error(X509, {"SPIFFE_BRIDGE_DAEMON_MODE": "maybe"})
        assert "SPIFFE_BRIDGE_HEALTH_CHECKS_BIND_PORT" in error(
            X509, {"SPIFFE_BRIDGE_HEALTH_CHECKS_BIND_PORT": "x"}
        )

    def test_jwt_audience_from_env_creates_entry(self) -> None:
        c = cfg(X509, {"SPIFFE_BRIDGE_JWT_AUDIENCE": "downward", "SPIFFE_BRIDGE_JWT_EXTRA_AUDIENCES": "a, b"})
        assert len(c.jwt_svids) == 1
        assert (c.jwt_svids[0].audience, c.jwt_svids[0].extra_audiences) == ("downward", ("a", "b"))
        assert c.jwt_svids[0].file_name == env_mod.DEFAULT_JWT_FILE

    def test_jwt_audience_from_env_overrides_single_entry(self) -> None:
        text = 'jwt_svids = [{jwt_audience = "file", jwt_svid_file_name = "t.jwt"}]'
        c = cfg(text, {"SPIFFE_BRIDGE_JWT_AUDIENCE": "env", "SPIFFE_BRIDGE_JWT_SVID_FILE_NAME": "e.jwt"})
        assert (c.jwt_svids[0].audience, c.jwt_svids[0].file_name) == ("env", "e.jwt")

    def test_jwt_env_refuses_ambiguity(self) -> None:
        text = (
            'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a"},'
            ' {jwt_audience = "b", jwt_svid_file_name = "b"}]'
        )
        assert "single 'jwt_svids' entry" in error(text, {"SPIFFE_BRIDGE_JWT_AUDIENCE": "x"})
        assert "is required" in error(X509, {"SPIFFE_BRIDGE_JWT_EXTRA_AUDIENCES": "x"})

    def test_variable_names_are_unique(self) -> None:
        names = [name for name, _, _ in env_mod.variables()]
        assert len(names) == len(set(names))
        assert env_mod.JWT_AUDIENCE not in names


class TestFileFormats:
    def test_toml_by_extension(self, tmp_path: Path) -> None:
        path = tmp_path / "helper.toml"
        path.write_text(
            'cert_dir = "certs"\nsvid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\n'
            'svid_bundle_file_name = "b.pem"\ncert_file_mode = 0o640\n'
            "[health_checks]\nlistener_enabled = true\n\n[[jwt_svids]]\n"
            'jwt_audience = "a"\njwt_svid_file_name = "a.jwt"\n\n[[outputs]]\nformat = "pem"\ndir = "out"\n'
        )
        c = load(path, environ={})
        assert c.cert_file_mode == 0o640 and c.health.listener_enabled
        assert c.jwt_svids[0].audience == "a" and c.outputs[0].format == "pem"

    def test_toml_unknown_key_has_a_line(self, tmp_path: Path) -> None:
        path = tmp_path / "helper.toml"
        path.write_text('svid_file_name = "s"\n\n[health_checks]\nbind_prot = 1\n')
        with pytest.raises(ConfigError, match=r"health_checks.bind_prot' \(line 4\)"):
            load(path, environ={})

    def test_json_by_extension_and_by_content(self, tmp_path: Path) -> None:
        doc = {
            "svid_file_name": "s",
            "svid_key_file_name": "k",
            "svid_bundle_file_name": "b",
            "daemon_mode": False,
        }
        (tmp_path / "h.json").write_text(json.dumps(doc))
        (tmp_path / "helper.conf").write_text(json.dumps(doc))  # HCL v1 decodes JSON too
        assert load(tmp_path / "h.json", environ={}).daemon_mode is False
        assert load(tmp_path / "helper.conf", environ={}).daemon_mode is False

    def test_file_errors_name_the_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not found"):
            load(tmp_path / "missing.conf")
        bad = tmp_path / "bad.conf"
        bad.write_text("a = [")
        with pytest.raises(ConfigError, match=r"bad.conf: invalid HCL: line 1"):
            load(bad)
        (tmp_path / "bad.toml").write_text("a = = 1")
        with pytest.raises(ConfigError, match="invalid TOML"):
            load(tmp_path / "bad.toml")


# -- issue #14: values --check accepted and run could not serve --------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e308", "at most 8760h"),
        ('"10000000h"', "at most 8760h"),
        ('"8761h"', "at most 8760h"),
        ("31536001", "at most 8760h"),
    ],
)
def test_durations_are_bounded(value: str, reason: str) -> None:
    assert reason in error(X509 + f"\none_shot_timeout = {value}")
    assert cfg(X509 + '\none_shot_timeout = "8760h"').one_shot_timeout == 8760 * 3600


@pytest.mark.parametrize(
    ("value", "seconds"),
    [('"500ms"', 0.5), ('" 30 s "', 30.0), ('"1h30m"', 5400.0), ('"1d"', 86400.0), ("45", 45.0)],
)
def test_durations_read_as_the_command_line_reads_them(value: str, seconds: float) -> None:
    """One grammar for durations: ``--timeout 1h30m`` and ``one_shot_timeout = "1h30m"`` agree."""
    assert cfg(X509 + f"\none_shot_timeout = {value}").one_shot_timeout == seconds
    assert "must be a duration" in error(X509 + '\none_shot_timeout = "3 0s"')


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e400", str(10**30)])
def test_non_finite_durations_from_json(value: str) -> None:
    doc = '{"svid_file_name": "a", "svid_key_file_name": "b", "svid_bundle_file_name": "c", '
    with pytest.raises(ConfigError, match="'reload_command_timeout'"):
        build(parse_text(doc + f'"reload_command_timeout": {value}}}', "json"), environ={})


def test_nan_duration_from_the_environment() -> None:
    msg = error(X509, {"SPIFFE_BRIDGE_ONE_SHOT_TIMEOUT": "nan"})
    assert "SPIFFE_BRIDGE_ONE_SHOT_TIMEOUT" in msg


@pytest.mark.parametrize("uid", ["4294967295", "99999999999", "-2"])
def test_output_uid_and_gid_are_bounded(uid: str) -> None:
    for key in ("uid", "gid"):
        msg = error(X509 + f'\noutputs = [{{format = "pem", dir = "/o", {key} = {uid}}}]')
        assert f"'outputs[0].{key}' (line 5)" in msg and "between -1 and 4294967294" in msg
    assert (
        cfg(X509 + '\noutputs = [{format = "pem", dir = "/o", uid = 4294967294}]').outputs[0].uid == 2**32 - 2
    )


@pytest.mark.parametrize(
    ("extra", "keys"),
    [
        (
            'svid_file_name = "s"\nsvid_key_file_name = "s"\nsvid_bundle_file_name = "s"',
            ("'svid_key_file_name' (line 2)", "'svid_file_name' (line 1)"),
        ),
        (
            X509 + 'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "svid_key.pem"}]',
            ("'jwt_svids[0].jwt_svid_file_name' (line 4)", "'svid_key_file_name' (line 2)"),
        ),
        (
            'jwt_bundle_file_name = "t"\njwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "t"},\n'
            '  {jwt_audience = "b", jwt_svid_file_name = "t"}]',
            ("'jwt_svids[1].jwt_svid_file_name' (line 3)", "'jwt_svids[0].jwt_svid_file_name' (line 2)"),
        ),
        (
            'svid_file_name = "d"\nsvid_key_file_name = "d/key.pem"\nsvid_bundle_file_name = "b"',
            ("'svid_key_file_name' (line 2)", "'svid_file_name' (line 1)"),
        ),
    ],
)
def test_colliding_names_in_cert_dir(extra: str, keys: tuple[str, ...]) -> None:
    msg = error(extra)
    assert all(k in msg for k in keys), msg
    assert "every file needs its own name" in msg


def test_distinct_names_with_spaces_are_fine() -> None:
    c = cfg(
        'svid_file_name = "my svid.pem"\nsvid_key_file_name = "my key.pem"\nsvid_bundle_file_name = "b.pem"'
    )
    assert c.svid_key_file_name == "my key.pem"


@pytest.mark.parametrize(
    "name", ["SPIFFE_BRIDGE_CERT_DIR", "SPIFFE_BRIDGE_HINT", "SPIFFE_BRIDGE_DAEMON_MODE"]
)
@pytest.mark.parametrize("value", ["", "  "])
def test_empty_environment_override_is_an_error(name: str, value: str) -> None:
    msg = error(X509 + 'cert_dir = "/certs"', {name: value})
    assert name in msg and "empty" in msg


@pytest.mark.parametrize(
    ("mode", "shown"), [("0640", "0o640"), ("0604", "0o604"), ("999", "0o747"), ('"0644"', "0o644")]
)
def test_key_file_mode_with_group_or_other_bits_needs_the_opt_in(mode: str, shown: str) -> None:
    msg = error(X509 + f"key_file_mode = {mode}")
    assert "'key_file_mode' (line 4)" in msg and shown in msg and "allow_shared_key_file_mode" in msg
    c = cfg(X509 + f"key_file_mode = {mode}\nallow_shared_key_file_mode = true")
    assert c.key_file_mode == int(shown, 8) and c.allow_shared_key_file_mode
    assert cfg(X509 + "key_file_mode = 0400").key_file_mode == 0o400


def test_shared_key_mode_in_an_output_needs_the_opt_in() -> None:
    from spiffe_bridge.sidecar import plan

    text = X509 + 'outputs = [{format = "combined", dir = "/h",\n  key_file_mode = "0640"}]'
    with pytest.raises(ConfigError, match=r"line 5\).*allow_shared_key_file_mode"):
        plan.build(cfg(text), {})
    opted = text.replace('"0640"}]', '"0640", allow_shared_key_file_mode = true}]')
    assert plan.build(cfg(opted), {})[0][1].x509[0].options.key_file_mode == 0o640
    assert (
        plan.build(cfg(text + "\nallow_shared_key_file_mode = true"), {})[0][1].x509[0].options.key_file_mode
    )


def test_decimal_mode_advice_is_valid_octal() -> None:
    c = cfg(X509 + "cert_file_mode = 999\njwt_bundle_file_mode = 644")
    advice = " ".join(c.warnings)
    assert "0o747" in advice and "0999" not in advice
    assert 'write 0644 or "644"' in advice


def test_mode_wider_than_32_bits_is_refused() -> None:
    assert "must be a file mode" in error(X509 + f"cert_file_mode = {2**40}")


def test_agent_address_error_names_its_line() -> None:
    msg = error(X509 + f'agent_address = "/run/{"x" * 120}.sock"')
    assert "'agent_address' (line 4)" in msg and "107" in msg
    assert "SPIFFE_ENDPOINT_SOCKET" in error(X509, {"SPIFFE_ENDPOINT_SOCKET": "/" + "y" * 200})


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_deep_nesting_is_a_config_error(kind: str) -> None:
    text = '{"x": ' + "[" * 3000 + "]" * 3000 + "}" if kind == "json" else "x = " + "[" * 3000 + "]" * 3000
    with pytest.raises(ConfigError, match="nested more than 32"):
        parse_text(text, kind)


def test_deep_toml_dotted_keys_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested more than 32"):
        parse_text(".".join(["k"] * 3000) + " = 1", "toml")


def test_toml_integer_python_cannot_convert_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        parse_text("one_shot_timeout = " + "9" * 5000, "toml")


def test_output_owner_takes_names() -> None:
    import grp
    import pwd

    out = cfg(X509 + '\noutputs = [{format = "pem", dir = "/o", uid = "nobody", gid = "nogroup"}]').outputs[0]
    assert (out.uid, out.gid) == (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    with pytest.raises(ConfigError, match=r"outputs\[0\]\.uid' \(line 5\): unknown user 'no-such-user-x'"):
        cfg(X509 + '\noutputs = [{format = "pem", dir = "/o", uid = "no-such-user-x"}]')
