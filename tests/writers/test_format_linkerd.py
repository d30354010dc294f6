"""linkerd: trust anchors and an EnvironmentFile read identically by systemd's rules and by sh."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
from _support.ci import require_binary
from _support.pki import certs_pem
from cryptography import x509
from writers_pki import Pki

from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import FormatError, X509Options, render_x509
from spiffe_bridge.formats.linkerd import anchors_changed, quote

OPTIONS = X509Options(
    linkerd_server_name="web.example.svc",
    linkerd_workload_api_address="unix:///run/spire/agent.sock",
)
ESCAPABLE = '"\\`$'


def parse_environment_file(text: str) -> dict[str, str]:
    """A parser following systemd.exec's documented EnvironmentFile= rules.

    Lines starting with # or ; are comments; KEY=VALUE; a value may be single-quoted
    (verbatim, may span lines), double-quoted (may span lines; backslash escapes
    " \\ ` $ and newline, other backslashes are kept) or bare (backslash escapes any
    character, backslash-newline continues, surrounding whitespace is stripped).
    """
    env: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] in "#;":
            i = text.find("\n", i) + 1 or n
            continue
        eq, nl = text.find("=", i), text.find("\n", i)
        if eq < 0 or (0 <= nl < eq):
            i = nl + 1 if nl >= 0 else n
            continue
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        value: list[str] = []
        if i < n and text[i] in "'\"":
            q = text[i]
            i += 1
            while i < n and text[i] != q:
                if q == '"' and text[i] == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    if nxt == "\n":
                        i += 2
                        continue
                    if nxt in ESCAPABLE:
                        value.append(nxt)
                        i += 2
                        continue
                value.append(text[i])
                i += 1
            assert i < n, f"unterminated quote in {key}"
            i += 1
            rest_end = text.find("\n", i)
            rest_end = n if rest_end < 0 else rest_end
            assert text[i:rest_end].strip() == "", f"text after the closing quote of {key}"
            i = rest_end
        else:
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n:
                    if text[i + 1] != "\n":
                        value.append(text[i + 1])
                    i += 2
                    continue
                value.append(text[i])
                i += 1
            value = list("".join(value).rstrip(" \t\r"))
        env[key] = "".join(value)
    return env


def pem(certs: Iterable[x509.Certificate]) -> str:
    return certs_pem(certs).decode()


def test_files_and_values(pki: Pki) -> None:
    out = {f.name: f for f in render_x509("linkerd", pki.context(), OPTIONS)}
    assert list(out) == ["trust_anchors.pem", "linkerd.env"]
    assert out["trust_anchors.pem"].data.decode() == pem(pki.ca.roots)
    env = parse_environment_file(out["linkerd.env"].data.decode())
    assert env == {
        "LINKERD2_PROXY_IDENTITY_SERVER_ID": "spiffe://example.org/workload",
        "LINKERD2_PROXY_IDENTITY_SERVER_NAME": "web.example.svc",
        "LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS": "unix:///run/spire/agent.sock",
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": pem(pki.ca.roots),
    }


def test_legacy_socket_variable_on_request(pki: Pki) -> None:
    options = X509Options(**{**OPTIONS.__dict__, "linkerd_legacy_socket_env": True})
    env_file = {f.name: f for f in render_x509("linkerd", pki.context(), options)}["linkerd.env"]
    env = parse_environment_file(env_file.data.decode())
    assert env["LINKERD2_PROXY_IDENTITY_SPIRE_SOCKET"] == "unix:///run/spire/agent.sock"


def test_shell_sourcing_gives_the_exact_pem(tmp_path: Path, pki: Pki) -> None:
    bash = require_binary("bash")
    FileSetWriter(tmp_path).write(render_x509("linkerd", pki.context(), OPTIONS))
    script = 'set -a; . "$1"; printf %s "$LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"'
    done = subprocess.run(
        [bash, "-c", script, "sh", str(tmp_path / "linkerd.env")], capture_output=True, check=True
    )
    assert done.stdout.decode() == pem(pki.ca.roots)
    assert done.stdout == (tmp_path / "trust_anchors.pem").read_bytes()


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "$HOME", "`id`", "multi\nline", " padded "])
def test_quoting_round_trips_through_systemd_rules_and_sh(value: str) -> None:
    text = f"X={quote(value)}\n"
    assert parse_environment_file(text) == {"X": value}
    done = subprocess.run(
        ["sh", "-c", 'eval "$1"; printf %s "$X"', "sh", text], capture_output=True, check=True
    )
    assert done.stdout.decode() == value


def test_missing_options_are_explained(pki: Pki) -> None:
    with pytest.raises(FormatError, match="server_name"):
        render_x509("linkerd", pki.context(), X509Options(linkerd_workload_api_address="unix:///x"))
    with pytest.raises(FormatError, match="workload_api_address"):
        render_x509("linkerd", pki.context(), X509Options(linkerd_server_name="x"))


def test_anchors_changed_tells_when_the_proxy_must_restart(tmp_path: Path, pki: Pki) -> None:
    ctx = pki.context()
    assert anchors_changed(tmp_path, ctx, OPTIONS)  # nothing written yet
    FileSetWriter(tmp_path).write(render_x509("linkerd", ctx, OPTIONS))
    assert not anchors_changed(tmp_path, pki.context(), OPTIONS)  # SVID rotation: same roots
    other = Pki(type(pki.ca)("example.org"))
    assert anchors_changed(tmp_path, other.context(), OPTIONS)  # root rotation
