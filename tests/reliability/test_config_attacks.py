"""Configurations ``--check`` used to accept and ``run`` then crashed on or retried forever (issue #14).

Each one goes through the real CLI twice, ``python -m spiffe_bridge run -config X --check`` and
``run -config X`` (daemon mode), and must exit 2 from both with a message naming the key and its
line, before anything is written. A file name with spaces, legal in spiffe-helper, must work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spiffe_bridge.devagent.server import DevAgent

EXIT_CONFIG = 2
X509 = [
    'svid_file_name = "svid.pem"',
    'svid_key_file_name = "svid_key.pem"',
    'svid_bundle_file_name = "b.pem"',
]


def _cli(conf: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "spiffe_bridge", "run", "-config", str(conf), *extra],
            cwd=conf.parent,
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        what = " ".join(extra) or "run"
        raise AssertionError(f"{what} did not exit within {timeout}s: {exc.stderr!r}") from None
    return proc.returncode, proc.stderr


def _hcl(tmp_path: Path, lines: list[str]) -> tuple[Path, Path]:
    """A config with cert_dir and agent_address on lines 1-2, then ``lines``."""
    certs = tmp_path / "certs"
    text = [f'cert_dir = "{certs}"', f'agent_address = "{tmp_path / "agent.sock"}"', *lines]
    conf = tmp_path / "helper.conf"
    conf.write_text("\n".join(text) + "\n")
    return conf, certs


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _assert_refused(conf: Path, certs: Path, *needles: str, env: dict[str, str] | None = None) -> None:
    for extra in (["--check"], []):
        code, err = _cli(conf, *extra, env=env)
        assert code == EXIT_CONFIG, (extra, code, err)
        assert "configuration error" in err and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, (needle, err)
        written = sorted(p.name for p in conf.parent.iterdir() if p != conf)
        assert written == [], written  # no cert_dir, output dir or stray key in the working directory
    assert not certs.exists()


HCL_ATTACKS = {
    # OverflowError in fchown on the first write, after a 0700 version directory was made
    "uid beyond uid_t": ['outputs = [{format = "pem", dir = "out",', "  uid = 99999999999}]", *X509],
    "huge timeout": ["one_shot_timeout = 1e308", *X509],
    "duration beyond a year": ['reload_command_timeout = "10000000h"', *X509],
    # ValueError traceback: Python refuses to convert integers of more than 4300 digits
    "integer of 5000 digits": ["health_checks {", f"  bind_port = {'9' * 5000}", "}", *X509],
    "socket path over 107 bytes": [f'agent_address = "/tmp/{"s" * 120}.sock"'],
    "all X.509 names equal": [
        f'{key} = "x.pem"' for key in ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")
    ],
    "JWT file named like the key": [
        *X509,
        'jwt_svids = [{jwt_audience = "a",',
        '  jwt_svid_file_name = "svid_key.pem"}]',
    ],
    "nested too deep": [*X509, f"x = {_deep(2000)}"],
    "world-readable key (decimal 999)": [*X509, "key_file_mode = 999"],
}
NEEDLES = {
    "uid beyond uid_t": "'outputs[0].uid' (line 4)",
    "huge timeout": "'one_shot_timeout' (line 3)",
    "duration beyond a year": "'reload_command_timeout' (line 3)",
    "integer of 5000 digits": "line 4: integer",
    "socket path over 107 bytes": "'agent_address' (line 2)",  # its own config: see the test
    "all X.509 names equal": "'svid_key_file_name' (line 4)",
    "JWT file named like the key": "'jwt_svids[0].jwt_svid_file_name' (line 7)",
    "nested too deep": "line 6: values are nested",
    "world-readable key (decimal 999)": "'key_file_mode' (line 6)",
}


@pytest.mark.parametrize("attack", list(HCL_ATTACKS))
def test_hcl_attack_exits_2_naming_key_and_line(tmp_path: Path, attack: str) -> None:
    lines = HCL_ATTACKS[attack]
    if attack == "socket path over 107 bytes":  # replace the base agent_address rather than repeat it
        certs = tmp_path / "certs"
        conf = tmp_path / "helper.conf"
        conf.write_text("\n".join([f'cert_dir = "{certs}"', lines[0], *X509]) + "\n")
        _assert_refused(conf, certs, NEEDLES[attack], "107")
        return
    conf, certs = _hcl(tmp_path, lines)
    _assert_refused(conf, certs, NEEDLES[attack])


@pytest.mark.parametrize(
    ("value", "shown"),
    [("inf", "inf"), ("nan", "nan"), ("1e308", "1e+308")],
)
def test_non_finite_durations_in_toml(tmp_path: Path, value: str, shown: str) -> None:
    certs = tmp_path / "certs"
    conf = tmp_path / "helper.toml"
    names = "\n".join(X509)
    conf.write_text(f'cert_dir = "{certs}"\n{names}\none_shot_timeout = {value}\n')
    _assert_refused(conf, certs, "'one_shot_timeout' (line 5)", shown)


def test_deep_json_exits_2_naming_the_line(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    conf = tmp_path / "helper.json"
    doc = json.dumps({"cert_dir": str(certs), "svid_file_name": "a", "svid_key_file_name": "b"})
    conf.write_text(doc[:-1] + ',\n"x": ' + _deep(5000) + "}\n")
    _assert_refused(conf, certs, "line 2: values are nested")


def test_empty_cert_dir_override_exits_2(tmp_path: Path) -> None:
    """``SPIFFE_BRIDGE_CERT_DIR=`` used to mean "current directory": the key landed next to the config."""
    conf, certs = _hcl(tmp_path, X509)
    _assert_refused(conf, certs, "SPIFFE_BRIDGE_CERT_DIR", env={"SPIFFE_BRIDGE_CERT_DIR": ""})
    assert not (tmp_path / "svid_key.pem").exists()


def test_shared_key_mode_needs_the_opt_in(tmp_path: Path) -> None:
    conf, certs = _hcl(tmp_path, [*X509, "key_file_mode = 0640"])
    _assert_refused(conf, certs, "'key_file_mode' (line 6)", "allow_shared_key_file_mode")
    conf.write_text(conf.read_text() + "allow_shared_key_file_mode = true\n")
    code, err = _cli(conf, "--check")
    assert code == 0, err


def test_decimal_999_advice_is_not_an_invalid_octal(tmp_path: Path) -> None:
    """The warning used to advise writing ``0999``, itself invalid; 999 is fine for a cert file."""
    conf, _certs = _hcl(tmp_path, [*X509, "cert_file_mode = 999"])
    code, err = _cli(conf, "--check")
    assert code == 0, err
    assert "0o747" in err and "0999" not in err


@pytest.mark.dev_agent(identities=["spiffe://example.org/api"])
def test_file_names_with_spaces_work(dev_agent: DevAgent, tmp_path: Path) -> None:
    certs = tmp_path / "my certs"
    lines = [
        f'cert_dir = "{certs}"',
        f'agent_address = "{dev_agent.address}"',
        'svid_file_name = "my svid.pem"',
        'svid_key_file_name = "my key.pem"',
        'svid_bundle_file_name = "my bundle.pem"',
        'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db token.jwt"}]',
    ]
    conf = tmp_path / "helper.conf"
    conf.write_text("\n".join(lines) + "\n")
    code, err = _cli(conf, "-daemon-mode=false")
    assert code == 0, err
    assert b"BEGIN PRIVATE KEY" in (certs / "my key.pem").read_bytes()
    token = (certs / "db token.jwt").read_text()
    assert dev_agent.validate_jwt_svid(token, "db")[0] == "spiffe://example.org/api"
