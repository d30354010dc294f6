"""`spiffe-bridge demo` runs end to end and leaves files nginx accepts."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from _support.ci import require_binary


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo(out: pathlib.Path) -> str:
    """Run ``spiffe-bridge demo --dir out``; its stdout, once every check passed."""
    result = subprocess.run(
        [sys.executable, "-m", "spiffe_bridge", "demo", "--dir", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed" in result.stdout
    assert "FAILED" not in result.stdout
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    out = tmp_path_factory.mktemp("demo") / "spiffe-bridge-demo"
    return out, _demo(out)


@pytest.fixture(scope="module")
def demo_dir(demo_run: tuple[pathlib.Path, str]) -> pathlib.Path:
    return demo_run[0]


def test_every_format_written(demo_dir: pathlib.Path) -> None:
    for sub, name in [
        ("pem", "svid.pem"),
        ("pem", "svid_key.pem"),
        ("pem", "svid_bundle.pem"),
        ("pem", "federated/partner.example.pem"),
        ("pem", "jwt_svid.token"),
        ("combined", "svid_combined.pem"),
        ("envoy-sds", "sds_tls_certificate.json"),
        ("pkcs12", "svid.p12"),
        ("der", "key.p8"),
        ("linkerd", "linkerd.env"),
        ("spiffe-fs", "credential-bundle.pem"),
        ("spiffe-fs", "example.org.spiffe-trust-bundle.pem"),
        ("bundle-map", "spiffe_bundle_map.json"),
    ]:
        assert (demo_dir / sub / name).is_file(), f"{sub}/{name} missing"
    assert (demo_dir / "pem" / "svid_key.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.consumers
def test_nginx_accepts_demo_files(demo_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    nginx = require_binary("nginx")
    pem = demo_dir / "pem"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
user root;
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{}}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{_free_port()} ssl;
    ssl_certificate {pem}/svid.pem;
    ssl_certificate_key {pem}/svid_key.pem;
    ssl_client_certificate {pem}/svid_bundle.pem;
    ssl_verify_client on;
    ssl_verify_depth 3;
  }}
}}
"""
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_a_file_of_the_users_in_the_target_is_no_failure(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo"
    (out / "pem").mkdir(parents=True)
    (out / "pem" / "NOTES.txt").write_text("mine\n")
    _demo(out)
    assert (out / "pem" / "NOTES.txt").read_text() == "mine\n"


def test_it_says_what_it_ran_and_what_to_do_next(demo_run: tuple[pathlib.Path, str]) -> None:
    demo_dir, stdout = demo_run
    assert stdout.startswith("Started a stand-in Workload API agent (spiffe-bridge's dev agent, not SPIRE)")
    assert stdout.startswith("Started a stand-in Workload API agent (spiffe-bridge's dev agent, not SPIRE")
    conf = demo_dir / "helper.conf"
    checked = subprocess.run(
        [sys.executable, "-m", "spiffe_bridge", "run", "-config", str(conf), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr  # the printed next step's config is valid
