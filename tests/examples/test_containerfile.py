"""The Containerfile and the image the Kubernetes example names, checked without a container engine.

CI cannot build the image (no registry to pull the base from), so this checks what can
be checked: the Containerfile copies the wheel ``make dist`` builds and sources that
exist; its final stage is non-root and starts the installed entry point; the manifest
and README name the same tag; the build stage's shell steps work on this host's
Python 3.11 (standing in for the base image) and the image's command runs as its
user; and the installed wheel runs the sidecar with / mounted read-only, as under
readOnlyRootFilesystem.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import spiffe_bridge

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"
MANIFEST = REPO / "examples" / "sidecar" / "kubernetes-nginx.yaml"
TAG = f"spiffe-bridge:{spiffe_bridge.__version__}"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(CONTAINERFILE.read_text()):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def test_multi_stage_on_one_base() -> None:
    found = stages()
    assert len(found) >= 2
    bases = {stage[0][1].split()[0] for stage in found}
    # the venv copied into the last stage links to the first stage's interpreter
    assert bases == {"${PYTHON_IMAGE}"}
    args = [rest for word, rest in instructions(CONTAINERFILE.read_text()) if word == "ARG"]
    assert any(a.startswith("PYTHON_IMAGE=") and "python:3.11" in a for a in args), args


def test_copies_the_wheel_make_dist_builds(tmp_path: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^dist:.*\n(\t.*\n)*\t\$\(PY\) -m build -o dist \.", makefile, re.MULTILINE)
    # the same build backend make dist runs, without the isolated env (no index needed)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (p.name for p in tmp_path.glob("*.whl"))
    build = stages()[0]
    copies = [rest.split() for word, rest in build if word == "COPY"]
    assert ["dist/", "/tmp/dist/"] in copies
    run = " ".join(rest for word, rest in build if word == "RUN")
    pattern = re.search(r"/tmp/dist/(\S+\.whl)", run)
    assert pattern is not None and fnmatch.fnmatch(wheel, pattern.group(1)), (wheel, run)
    assert '"$1"' in run  # the wheel alone: metrics (the Kubernetes example enables them) need no extra


def test_copy_sources_exist_and_are_in_the_context() -> None:
    for stage in stages():
        for word, rest in stage:
            if word != "COPY" or rest.startswith("--from="):
                continue
            *sources, _ = rest.split()
            for src in sources:
                assert src == "dist/" or (REPO / src).exists(), src
    for ignore in (REPO / ".containerignore", REPO / ".dockerignore"):
        if ignore.exists():
            patterns = [line.strip() for line in ignore.read_text().splitlines()]
            assert not {"dist", "dist/", "dist/*", "*"} & set(patterns), ignore


def test_final_stage_is_non_root_and_runs_the_installed_entry_point() -> None:
    final = stages()[-1]
    words = dict(final)
    assert words["COPY"].split() == ["--from=build", "/opt/spiffe-bridge", "/opt/spiffe-bridge"]
    uid, _, gid = words["USER"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert json.loads(words["ENTRYPOINT"]) == ["/opt/spiffe-bridge/bin/spiffe-bridge"]
    assert "PYTHONDONTWRITEBYTECODE=1" in words["ENV"]
    assert not [w for w, _ in final if w == "RUN"]  # nothing runs in the image itself


def test_manifest_and_readme_name_the_tag_the_readme_builds() -> None:
    images = re.findall(r"^\s*image:\s*(\S+)", MANIFEST.read_text(), re.MULTILINE)
    assert TAG in images
    readme = (REPO / "README.md").read_text()
    assert f"podman build -t {TAG} -f Containerfile ." in readme
    assert "The image build is untested" in readme
    assert f"podman build -t {TAG} -f Containerfile ." in CONTAINERFILE.read_text()


def test_installed_wheel_runs_the_sidecar_from_a_read_only_filesystem(
    scratch: Path, installed_bin: Path
) -> None:
    """As in the pod: / read-only (a private mount namespace), only cert_dir writable."""
    base = scratch / "readonly"
    certs = base / "certs"
    certs.mkdir(parents=True)
    socket_path = base / "agent.sock"
    agent = subprocess.Popen(
        [
            str(installed_bin / "spiffe-bridge"),
            "dev-agent",
            "--socket",
            str(socket_path),
            "--socket-mode",
            "0777",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline().decode()
        while line and "serving" not in line:  # the world-connectable warning comes first
            line = agent.stdout.readline().decode()
        assert "serving" in line
        config = base / "helper.conf"
        config.write_text(
            f'agent_address = "{socket_path}"\ncert_dir = "{certs}"\ndaemon_mode = false\n'
            'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
            'svid_bundle_file_name = "svid_bundle.pem"\n'
        )
        script = (
            f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(certs))} && "
            "mount -o remount,bind,ro / && "
            f"! touch {shlex.quote(str(installed_bin / 'probe'))} 2>/dev/null && "
            f"{shlex.quote(str(installed_bin / 'spiffe-bridge'))} run -config {shlex.quote(str(config))} && "
            f"ls {shlex.quote(str(certs))}"
        )
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
            cwd="/",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(done.stdout.split()) >= {"svid.pem", "svid_key.pem", "svid_bundle.pem"}, done.stdout
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def _stage_one_run(context_dist: Path, prefix: Path, python_dir: Path) -> subprocess.CompletedProcess[str]:
    """The build stage's RUN, on this host: its paths moved under ``prefix``, ``python`` the system one."""
    run = " ; ".join(rest for word, rest in stages()[0] if word == "RUN")
    run = run.replace("/tmp/dist/", f"{context_dist}/").replace(
        "/opt/spiffe-bridge", f"{prefix}/opt/spiffe-bridge"
    )
    return subprocess.run(
        ["/bin/sh", "-c", run],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{python_dir}:/usr/bin:/bin", "HOME": str(prefix)},
        cwd="/",
    )


def test_build_stage_steps_install_the_wheel_and_the_image_command_runs_as_its_user(
    scratch: Path, installed_bin: Path
) -> None:
    """Not the image build: its shell steps, run here with Debian's Python 3.11 in place of the base."""
    base = scratch / "image"
    context_dist = base / "context" / "dist"
    context_dist.mkdir(parents=True)
    python_dir = base / "python"
    python_dir.mkdir()
    (python_dir / "python").symlink_to("/usr/bin/python3")
    base.chmod(0o755)

    empty = _stage_one_run(context_dist, base / "empty", python_dir)
    assert empty.returncode != 0 and "run 'make dist' first" in empty.stderr, empty.stderr

    (wheel,) = (scratch / "dist").glob("spiffe_bridge-*.whl")  # what installed_bin built
    (context_dist / wheel.name).write_bytes(wheel.read_bytes())
    done = _stage_one_run(context_dist, base / "root", python_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"spiffe-bridge {spiffe_bridge.__version__}" in done.stdout

    final = dict(stages()[-1])
    uid, _, gid = final["USER"].partition(":")
    entrypoint = json.loads(final["ENTRYPOINT"])[0].replace("/opt/", f"{base}/root/opt/")
    command = [entrypoint, *json.loads(final["CMD"])]
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    ran = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=60, cwd="/")
    assert ran.returncode == 0 and "usage" in ran.stdout.lower(), ran.stdout + ran.stderr
    metrics = subprocess.run(
        [*as_user, f"{base}/root/opt/spiffe-bridge/bin/python", "-c", "import spiffe_bridge.promtext"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert metrics.returncode == 0, metrics.stderr
