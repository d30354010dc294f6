"""Reading a SPIFFE credential folder (Filesystem Delivery draft): locate, parse, watch.

``locate`` follows the draft's §3.1 after the Workload API check: an explicit
path, then ``$SPIFFE_CREDENTIAL_FOLDER``, then the first default folder holding a
``credential-bundle.pem``. ``read`` loads the credential bundle in one
open/read/close (§3.2), checks the draft's byte rules, reads every
``<td>.spiffe-trust-bundle.pem`` and runs the result through the same validation
as an agent's answer, so a folder yields exactly what the Workload API would.
``watch`` yields a new context whenever the folder's files change: inotify
(asyncinotify, optional extra ``inotify``) wakes it at once, and a stat check on a
timer covers systems without inotify and folders replaced under the watch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.errors import SpiffeBridgeError, ValidationError
from spiffe_bridge.x509context import X509Context

log = logging.getLogger("spiffe_bridge.credential_folder")

ENV_VAR = "SPIFFE_CREDENTIAL_FOLDER"
DEFAULT_FOLDERS: tuple[Path, ...] = (
    Path("/run/secrets/workload-spiffe-credentials"),
    Path("/var/run/secrets/workload-spiffe-credentials"),
)
#: The standard's file names (draft, section 2), stated here once; the spiffe-fs writer uses them.
CREDENTIAL_BUNDLE = "credential-bundle.pem"
TRUST_BUNDLE_SUFFIX = ".spiffe-trust-bundle.pem"
#: Upper bound for one file: a credential folder is a few KiB; refuse to slurp a planted giant.
MAX_FILE_BYTES = 1 << 20

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.S)


class CredentialFolderError(SpiffeBridgeError):
    """No credential folder was found, or its files cannot be read."""


def locate(
    folder: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    defaults: Sequence[Path] = DEFAULT_FOLDERS,
) -> Path | None:
    """The credential folder to use per §3.1 (steps 2-5), or None when none was issued."""
    if folder is not None:
        return Path(folder)
    value = (os.environ if env is None else env).get(ENV_VAR, "")
    if value:
        return Path(value)
    for candidate in defaults:
        if (candidate / CREDENTIAL_BUNDLE).exists():
            return candidate
    return None


def _read(path: Path) -> bytes:
    """One open/read/close of at most MAX_FILE_BYTES (follows links: projected volumes use them)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialFolderError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ValidationError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def pem_blocks(data: bytes, what: str) -> list[tuple[str, bytes]]:
    """(type, DER) for each block; ValidationError for data between blocks or PEM headers."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    for match in _BLOCK.finditer(data):
        if data[pos : match.start()].strip():
            raise ValidationError(f"{what}: data outside PEM blocks")
        body = match.group(2)
        if b":" in body:
            raise ValidationError(f"{what}: PEM headers are not allowed")
        try:
            out.append((match.group(1).decode(), base64.b64decode(b"".join(body.split()), validate=True)))
        except binascii.Error:
            raise ValidationError(f"{what}: a {match.group(1).decode()} block is not base64") from None
        pos = match.end()
    if data[pos:].strip() or not out:
        raise ValidationError(f"{what}: {'data after the last PEM block' if out else 'no PEM blocks'}")
    return out


def _certs(blocks: Sequence[tuple[str, bytes]], what: str) -> list[bytes]:
    for kind, _ in blocks:
        if kind != "CERTIFICATE":
            raise ValidationError(f"{what}: unexpected {kind} block")
    return [der for _, der in blocks]


def _leaf_spiffe_id(der: bytes, what: str) -> str:
    try:
        leaf = x509.load_der_x509_certificate(der)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise ValidationError(f"{what}: leaf certificate has no readable subjectAltName ({exc})") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValidationError(f"{what}: leaf must have exactly one URI SAN, found {len(uris)}")
    return str(uris[0])


def trust_bundle_names(folder: Path) -> list[str]:
    """The trust bundle file names in ``folder``, sorted."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise CredentialFolderError(f"{folder}: {exc.strerror or exc}") from None
    return sorted(n for n in names if n.endswith(TRUST_BUNDLE_SUFFIX) and not n.startswith("."))


def read(folder: Path) -> X509Context:
    """The validated X.509 context a credential folder holds (its one SVID, its trust bundles)."""
    from spiffe_bridge._proto import workload_pb2 as pb

    what = str(folder / CREDENTIAL_BUNDLE)
    blocks = pem_blocks(_read(folder / CREDENTIAL_BUNDLE), what)
    if len(blocks) < 2 or blocks[0][0] != "PRIVATE KEY":
        raise ValidationError(f"{what}: must be a PRIVATE KEY block followed by the certificate chain")
    key_der, chain = blocks[0][1], _certs(blocks[1:], what)
    spiffe_id = _leaf_spiffe_id(chain[0], what)
    bundles: dict[str, list[bytes]] = {}
    for name in trust_bundle_names(folder):
        td = name[: -len(TRUST_BUNDLE_SUFFIX)]
        bundles[td] = _certs(pem_blocks(_read(folder / name), str(folder / name)), name)
    own_td = spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
    own = bundles.pop(own_td, None)
    if own is None:
        raise ValidationError(f"{folder}: no {own_td}{TRUST_BUNDLE_SUFFIX} for the SVID's own trust domain")
    if len(chain) > 1 and chain[-1] in own:  # the draft lets the chain end with its root
        chain = chain[:-1]
    svid = pb.X509SVID(
        spiffe_id=spiffe_id, x509_svid=b"".join(chain), x509_svid_key=key_der, bundle=b"".join(own)
    )
    federated = {td: b"".join(ders) for td, ders in bundles.items()}
    return decode_x509_context(pb.X509SVIDResponse(svids=[svid], federated_bundles=federated))


def _signature(folder: Path) -> tuple[Any, ...]:
    """What changes when the folder's content does: (name, inode, size, mtime) of each file read."""
    out: list[Any] = []
    try:
        names = [CREDENTIAL_BUNDLE, *trust_bundle_names(folder)]
    except CredentialFolderError:
        return ("missing",)
    for name in names:
        try:
            st = os.stat(folder / name)
        except OSError:
            out.append((name, None))
            continue
        out.append((name, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    return tuple(out)


@contextlib.contextmanager
def _inotify(folder: Path) -> Iterator[Any | None]:
    """An asyncinotify watch on ``folder``, or None without the library, inotify or the folder."""
    try:
        from asyncinotify import Inotify, Mask
    except ImportError:
        yield None
        return
    try:
        notify = Inotify()
    except OSError as exc:  # not Linux, or out of inotify instances
        log.info("inotify unavailable (%s); polling %s", exc, folder)
        yield None
        return
    with notify:
        mask = Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.CLOSE_WRITE | Mask.ATTRIB
        try:
            notify.add_watch(folder, mask | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR)
        except OSError:
            yield None
            return
        yield notify


def _folder_gone(mask: int) -> bool:
    from asyncinotify import Mask

    return bool(mask & (Mask.IGNORED | Mask.DELETE_SELF | Mask.MOVE_SELF))


async def watch(
    folder: Path,
    on_error: Callable[[Exception], None],
    poll_interval: float = 5.0,
    inotify_poll_interval: float = 60.0,
) -> AsyncIterator[X509Context]:
    """Yield the folder's context now and after every change; errors go to ``on_error``, never out.

    A failed read (half-rotated folder, bad bytes) is retried on the next event or after
    at most ``poll_interval`` seconds; the last good context stays with the caller.
    """
    last: tuple[Any, ...] | None = None
    while True:
        with _inotify(folder) as notify:
            interval = inotify_poll_interval if notify is not None else poll_interval
            failed = False
            while True:
                signature = _signature(folder)
                if signature != last or failed:
                    last = signature
                    try:
                        ctx = read(folder)
                    except (ValidationError, CredentialFolderError) as exc:
                        failed = True
                        on_error(exc)
                    else:
                        failed = False
                        yield ctx
                wait = poll_interval if failed else interval
                if notify is None:
                    await asyncio.sleep(wait)
                    if signature == ("missing",):
                        break  # the folder may appear: try to watch it again
                    continue
                try:
                    event = await asyncio.wait_for(notify.get(), wait)
                except TimeoutError:
                    continue
                if _folder_gone(event.mask):
                    break  # the folder itself went away or moved: watch the path anew
                await asyncio.sleep(0)  # let a burst of events from one swap arrive
                while True:  # drain the burst, then read once
                    try:
                        await asyncio.wait_for(notify.get(), 0.01)
                    except TimeoutError:
                        break
