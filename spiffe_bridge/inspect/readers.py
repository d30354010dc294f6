"""Reading what a format wrote: bounded file reads and parsers for PEM, DER, env files and SDS JSON.

Every reader returns parsed objects or raises :class:`ReadError` saying which file
and what is wrong with it; nothing here decides whether the material is *good*
(that is :mod:`.checks`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from spiffe_bridge._der import split_der
from spiffe_bridge.errors import ValidationError

#: Credential files are small; refuse to slurp anything bigger (a log file given by mistake).
MAX_FILE_BYTES = 16 * 1024 * 1024
_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.DOTALL)


class ReadError(ValueError):
    """A file cannot be read or does not hold what its name promises."""


@dataclass(frozen=True)
class PemBlock:
    """One PEM block: its label, DER bytes and whether it carried RFC 1421 headers."""

    label: str
    der: bytes
    has_headers: bool


def read_bytes(path: str) -> bytes:
    """The file's bytes; never blocks on a FIFO and refuses non-regular or oversized files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ReadError(f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadError(f"{path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ReadError(f"{path}: {st.st_size} bytes is too big for a credential file")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def pem_blocks(data: bytes) -> tuple[list[PemBlock], bool]:
    """The PEM blocks in ``data`` and whether anything but whitespace sits between them."""
    blocks: list[PemBlock] = []
    pos, stray = 0, False
    for match in _PEM_RE.finditer(data):
        if data[pos : match.start()].strip():
            stray = True
        pos = match.end()
        body = match.group(2)
        headers = b":" in body
        lines = [ln for ln in body.splitlines() if ln.strip() and b":" not in ln]
        try:
            der = base64.b64decode(b"".join(lines), validate=True)
        except (binascii.Error, ValueError):
            raise ReadError(
                f"PEM block {len(blocks)} ({match.group(1).decode()}) is not valid base64"
            ) from None
        blocks.append(PemBlock(match.group(1).decode(), der, headers))
    if data[pos:].strip():
        stray = True
    return blocks, stray


def load_cert(der: bytes, what: str) -> x509.Certificate:
    """One DER certificate, or ReadError."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = cert.extensions, cert.subject
    except ValueError as exc:
        raise ReadError(f"{what}: not a valid certificate ({exc})") from None
    return cert


def load_key(der: bytes, what: str) -> PrivateKeyTypes:
    """One unencrypted PKCS#8 DER private key, or ReadError."""
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise ReadError(f"{what}: not an unencrypted PKCS#8 private key ({type(exc).__name__})") from None


def der_certs(data: bytes, what: str) -> list[x509.Certificate]:
    """Concatenated DER certificates (the Workload API encoding)."""
    try:
        ders = split_der(data, what)
    except ValidationError as exc:
        raise ReadError(str(exc)) from None
    return [load_cert(der, f"{what}: certificate {i}") for i, der in enumerate(ders)]


def pem_certs(data: bytes, what: str) -> list[x509.Certificate]:
    """Every ``CERTIFICATE`` block; ReadError if there is another kind of block."""
    blocks, _ = pem_blocks(data)
    for block in blocks:
        if block.label != "CERTIFICATE":
            raise ReadError(f"{what}: unexpected PEM block {block.label!r}")
    return [load_cert(b.der, f"{what}: certificate {i}") for i, b in enumerate(blocks)]


def parse_env_file(text: str, what: str) -> dict[str, str]:
    """Variables of a systemd EnvironmentFile in the subset our linkerd writer emits (double quotes)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        line = text[pos : end if end >= 0 else len(text)]
        if not line.strip() or line.lstrip().startswith("#"):
            pos = (end if end >= 0 else len(text)) + 1
            continue
        name, eq, rest = line.partition("=")
        if not eq:
            raise ReadError(f"{what}: line without '=': {name.strip()[:40]!r}")
        start = pos + len(name) + 1
        if not rest.startswith('"'):
            out[name.strip()] = rest.strip()
            pos = (end if end >= 0 else len(text)) + 1
            continue
        value, pos = _quoted(text, start + 1, what, name.strip())
        out[name.strip()] = value
    return out


def _quoted(text: str, pos: int, what: str, name: str) -> tuple[str, int]:
    chars: list[str] = []
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
        elif ch == '"':
            nl = text.find("\n", pos)
            return "".join(chars), (nl + 1 if nl >= 0 else len(text))
        else:
            chars.append(ch)
            pos += 1
    raise ReadError(f"{what}: {name} has an unterminated quoted value")


def sds_secret(data: bytes, what: str) -> dict[str, Any]:
    """The one Secret of an Envoy SDS DiscoveryResponse file."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ReadError(f"{what}: not valid JSON") from None
    resources = doc.get("resources") if isinstance(doc, dict) else None
    if not isinstance(resources, list) or len(resources) != 1 or not isinstance(resources[0], dict):
        raise ReadError(f"{what}: not a DiscoveryResponse with exactly one Secret")
    secret: dict[str, Any] = resources[0]
    return secret


def inline(node: Any, what: str) -> bytes:
    """The ``inline_string`` (or ``inline_bytes``) of an Envoy DataSource."""
    if isinstance(node, dict):
        if isinstance(node.get("inline_string"), str):
            return str(node["inline_string"]).encode()
        if isinstance(node.get("inline_bytes"), str):
            return base64.b64decode(node["inline_bytes"])
    raise ReadError(f"{what}: expected an inline DataSource")
