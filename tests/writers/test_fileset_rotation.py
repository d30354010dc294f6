"""A reader racing hundreds of rotations never gets a key that does not match its certificate.

The guarantee is the symlink layout's: a reader pins ``..data`` once (opens it as a
directory) and reads cert and key from that one version (``read_current``). A read
may fail with FileNotFoundError when its version was pruned underneath it -- the
reader retries -- but it can never combine two versions.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate
from writers_pki import Pki

from spiffe_bridge.fileset import FileSetWriter, read_current
from spiffe_bridge.formats import X509Options, render_x509

ROTATIONS = 300
PAIRS = 12  # distinct real SVIDs, cycled so consecutive versions always differ


def _public(pem: bytes, *, key: bool) -> bytes:
    if key:
        public = serialization.load_pem_private_key(pem, None).public_key()
    else:
        public = load_pem_x509_certificate(pem).public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def shm_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs directory when there is one: fsync costs nothing there, atomicity is the same."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path)
    path = Path(tempfile.mkdtemp(prefix="sb-rotation-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_reader_never_sees_a_mixed_pair(shm_dir: Path, flat_pki: Pki) -> None:
    tmp_path = shm_dir
    sets = [render_x509("pem", flat_pki.context(), X509Options()) for _ in range(PAIRS)]
    expected_key = {}
    for files in sets:
        by_name = {f.name: f.data for f in files}
        expected_key[by_name["svid.pem"]] = by_name["svid_key.pem"]
        assert _public(by_name["svid.pem"], key=False) == _public(by_name["svid_key.pem"], key=True)

    writer = FileSetWriter(tmp_path)
    writer.write(sets[0])
    done = threading.Event()
    seen: list[tuple[bytes, bytes]] = []
    retries = 0
    errors: list[BaseException] = []

    def reader() -> None:
        nonlocal retries
        try:
            while not done.is_set():
                try:
                    got = read_current(tmp_path, ["svid.pem", "svid_key.pem"], attempts=1)
                except FileNotFoundError:
                    retries += 1
                    continue
                seen.append((got["svid.pem"], got["svid_key.pem"]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(1, ROTATIONS + 1):
            assert writer.write(sets[n % PAIRS]).changed
    finally:
        done.set()
        for t in threads:
            t.join()

    assert not errors
    assert len(seen) > ROTATIONS // 10, "readers should have raced many rotations"
    mismatched = [1 for cert, key in seen if expected_key.get(cert) != key]
    assert mismatched == []
    distinct_certs = {cert for cert, _ in seen}
    assert len(distinct_certs) > 1, "readers should have observed rotations"
