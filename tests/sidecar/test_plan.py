"""Output plans: format options checked with lines, directories merged, passwords read, CLI wiring."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiffe_bridge.cli import run as cli
from spiffe_bridge.devagent import DevAgent
from spiffe_bridge.sidecar import metrics, plan
from spiffe_bridge.sidecar.config import Config, ConfigError, build, parse_text
from spiffe_bridge.sidecar.status import SidecarStatus

X509 = 'svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n'


def cfg(text: str) -> Config:
    return build(parse_text(text, "hcl"), environ={})


def plans(text: str, environ: dict[str, str] | None = None) -> list[plan.DirPlan]:
    return plan.build(cfg(text), environ or {})[0]


def test_legacy_keys_make_one_pem_plan_in_cert_dir(tmp_path: Path) -> None:
    text = X509 + f'cert_dir = "{tmp_path}"\nhint = "h"\nomit_expired = true\ncert_file_mode = 0640\n'
    text += (
        'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a.jwt"}]\njwt_bundle_file_name = "jb.json"'
    )
    (only,) = plans(text)
    assert only.directory == str(tmp_path) and only.layout == "symlink"  # ours: the set switches at once
    (out,) = only.x509
    assert out.format == "pem"
    opts = out.options
    assert (opts.svid_file_name, opts.hint, opts.omit_expired, opts.cert_file_mode) == (
        "s.pem",
        "h",
        True,
        0o640,
    )
    assert opts.federated_layout == "merged"
    assert only.jwt_options is not None and only.jwt_options.jwt_bundle_file_name == "jb.json"
    assert only.jwt_options.jwks_dir is None and only.wants_jwt_bundle


def test_outputs_sharing_a_directory_merge_and_inherit_hint(tmp_path: Path) -> None:
    text = (
        X509
        + f'cert_dir = "{tmp_path}"\nhint = "front"\n'
        + (
            f'outputs = [{{format = "combined", dir = "{tmp_path}", layout = "symlink"}},\n'
            f'  {{format = "der", dir = "{tmp_path / "der"}",\n'
            '    der_key_file_name = "k.der", key_file_mode = "0640", allow_shared_key_file_mode = true}]'
        )
    )
    merged, der = plans(text)
    assert [o.format for o in merged.x509] == ["pem", "combined"]
    assert der.x509[0].options.hint == "front"
    assert der.x509[0].options.der_key_file_name == "k.der" and der.x509[0].options.key_file_mode == 0o640
    assert der.layout == "symlink"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('outputs = [{format = "pfx", dir = "/x"}]', "unknown output format 'pfx'"),
        ('outputs = [{format = "pem",\n dir = "/x",\n svid_name = "a"}]', "unknown key 'svid_name' (line 3)"),
        ('outputs = [{format = "pem", dir = "/x", now = "2020"}]', "unknown key 'now'"),
        ('outputs = [{format = "pkcs12", dir = "/x", pkcs12_password = "hunter2"}]', "unknown key"),
        ('outputs = [{format = "pem", dir = "/x", omit_expired = "yes"}]', "must be true or false"),
        ('outputs = [{format = "pem", dir = "/x", svid_file_name = 3}]', "must be a string"),
        ('outputs = [{format = "pem", dir = "/x", federated_layout = "tree"}]', "merged or per-trust-domain"),
        ('outputs = [{format = "pem", dir = "/x"}, {format = "der", dir = "/x", layout = "flat"}]',
         "different layout or owner"),
        ('outputs = [{format = "pem", dir = "/x", svid_file_name = "../escape.pem"}]', "invalid file name"),
        ('outputs = [{format = "pem", dir = "/x", federated_dir = "/abs"}]', "invalid file name"),
        (X509.replace('"s.pem"', '".hidden"'), "X.509 file names"),
        ('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a/../b"}]', "'jwt_svids' file names"),
        ('outputs = [{format = "pkcs12", dir = "/x", pkcs12_password_file = "/no/p"}]', "cannot be read"),
    ],
)  # fmt: skip
def test_output_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        plans(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "key", "owners"),
    [
        ("pem", "pkcs12_alias", "pkcs12"),
        ("pem", "combined_file_name", "combined"),
        ("combined", "svid_file_name", "pem"),
        ("envoy-sds", "federated_dir", "pem, combined, der"),
        ("bundle-map", "key_file_mode", "pem, combined, envoy-sds, pkcs12, der, spiffe-fs"),
        ("der", "pkcs12_password_file", "pkcs12"),
        ("linkerd", "envoy_spiffe_validator", "envoy-sds"),
    ],
)
def test_an_option_of_another_format_is_an_unknown_key_that_names_its_format(
    fmt: str, key: str, owners: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plans(f'outputs = [{{format = "{fmt}",\n dir = "/x",\n {key} = "a"}}]')
    assert str(info.value) == (
        f"unknown key '{key}' (line 3) in an 'outputs' entry ({fmt}); it is an option of {owners}"
    )


def test_every_format_option_belongs_to_a_format_and_every_format_reads_real_options() -> None:
    import dataclasses

    from spiffe_bridge.formats import X509_FORMATS, X509Options, format_options, formats_taking

    fields = {f.name for f in dataclasses.fields(X509Options)} - {"now", "pkcs12_password"}
    fields -= {"pkcs12_truststore_password"}
    assert all(formats_taking(name) for name in fields), [n for n in fields if not formats_taking(n)]
    for fmt in X509_FORMATS:
        assert format_options(fmt) <= fields, fmt


def test_pkcs12_password_from_file_or_env(tmp_path: Path) -> None:
    secret = tmp_path / "p12"
    secret.write_text("s3cret\n")
    (from_file,) = plans(f'outputs = [{{format = "pkcs12", dir = "/x", pkcs12_password_file = "{secret}"}}]')
    assert from_file.x509[0].options.pkcs12_password == "s3cret"
    (from_env,) = plans('outputs = [{format = "pkcs12", dir = "/x"}]', {"SPIFFE_BRIDGE_PKCS12_PASSWORD": "e"})
    assert from_env.x509[0].options.pkcs12_password == "e"
    (custom,) = plans('pkcs12_password_env = "P"\noutputs = [{format = "pkcs12", dir = "/x"}]', {"P": "c"})
    assert custom.x509[0].options.pkcs12_password == "c"
    assert "s3cret" not in repr(from_file.x509[0].options)


def test_linkerd_output_defaults_to_the_agent_address() -> None:
    text = 'agent_address = "/run/a.sock"\n'
    text += 'outputs = [{format = "linkerd", dir = "/x", linkerd_server_name = "w"}]'
    (only,) = plans(text)
    assert only.x509[0].options.linkerd_workload_api_address == "/run/a.sock"


def test_metrics_need_no_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # importing it would fail
    body, content_type = metrics.renderer(SidecarStatus(x509_configured=True, jwt_paths=[]))()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"spiffe_bridge_build_info{" in body


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    return parser.parse_args(["run", *argv])


def test_cli_arguments() -> None:
    args = parse([])
    assert (args.config, args.daemon_mode, args.wrapped, args.check) == ("helper.conf", None, [], False)
    args = parse(["--config", "f.conf", "--daemon-mode=false", "--", "envoy", "-c", "--flag"])
    assert (args.config, args.daemon_mode, args.wrapped) == ("f.conf", False, ["envoy", "-c", "--flag"])
    assert parse(["--daemon-mode"]).daemon_mode is True
    with pytest.raises(SystemExit):
        parse(["--daemon-mode=maybe"])


@pytest.mark.usefixtures("restore_logging")
def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.conf"
    good.write_text(X509)
    assert cli.run(parse(["--config", str(good), "--check"])) == 0
    assert "configuration is valid" in capsys.readouterr().err
    bad = tmp_path / "bad.conf"
    bad.write_text(X509 + "nope = 1")
    assert cli.run(parse(["--config", str(bad), "--check"])) == 2
    assert cli.run(parse(["--config", str(good), "--daemon-mode=false", "--check", "--", "x"])) == 2


def test_actions_of_an_output_are_reported_as_ignored_in_one_shot_mode() -> None:
    """One-shot mode runs no action; a reload_*/restart_command key there used to be dropped silently."""
    text = 'agent_address = "/run/a.sock"\ndaemon_mode = false\noutputs = [\n'
    text += '  {format = "combined", dir = "/x", reload_haproxy = "unix:///run/h.sock"},\n'
    text += '  {format = "linkerd", dir = "/y", linkerd_server_name = "w", restart_command = ["true"]},\n]\n'
    _, warnings = plan.build(build(parse_text(text, "hcl"), environ={}), {})
    assert warnings == [
        "'reload_haproxy' (line 4) is ignored because daemon_mode is false",
        "'restart_command' (line 5) is ignored because daemon_mode is false",
    ]
    daemon, _ = plan.build(
        build(parse_text(text.replace("daemon_mode = false\n", ""), "hcl"), environ={}), {}
    )
    assert [u.action for p in daemon for u in p.updates] == ["reload_haproxy", "restart_command"]


def test_two_outputs_writing_one_name_differently_fail_naming_both(
    dev_agent: DevAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Used to fail every write with "duplicate file name" and no word of which outputs clashed."""
    from spiffe_bridge.sidecar.exitcodes import EXIT_WRITE
    from spiffe_bridge.sidecar.oneshot import OneShot

    certs = tmp_path / "certs"
    text = f'agent_address = "{dev_agent.address}"\ndaemon_mode = false\noutputs = [\n'
    text += f'  {{format = "pem", dir = "{certs}", svid_file_name = "svid_combined.pem"}},\n'
    text += f'  {{format = "combined", dir = "{certs}"}},\n]\n'
    config = build(parse_text(text, "hcl"), environ={})
    plans, _ = plan.build(config, {})
    assert OneShot(config, plans).run() == EXIT_WRITE
    clash = f"format 'pem' and format 'combined' both write 'svid_combined.pem' in {certs}, with different"
    assert clash in caplog.text
    assert not certs.exists() or not any(certs.iterdir())
    # the file both render alike (the bundle) is no clash
    text = text.replace('svid_file_name = "svid_combined.pem"', 'svid_file_name = "leaf.pem"')
    config = build(parse_text(text, "hcl"), environ={})
    plans, _ = plan.build(config, {})
    assert OneShot(config, plans).run() == 0
    assert (certs / "svid_bundle.pem").is_file() and (certs / "svid_combined.pem").is_file()
