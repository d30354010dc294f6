"""Text encodings of binary material that several modules share: PEM blocks and unpadded base64url."""

from __future__ import annotations

import base64
import binascii

_URLSAFE = bytes.maketrans(b"-_", b"+/")


def pem_block(label: str, der: bytes) -> bytes:
    """PEM-encode one DER item with 64-column lines (what Go's pem.Encode and OpenSSL write)."""
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN " + label.encode() + b"-----\n" + lines + b"\n-----END " + label.encode() + b"-----\n"


def b64url_decode(data: str) -> bytes:
    """Decode unpadded base64url (JWS segments, JWK members); raise ValueError on bad input."""
    if not isinstance(data, str):
        raise ValueError("not a string")
    try:  # what base64.urlsafe_b64decode does, without its per-call conversions
        raw = data.encode("ascii").translate(_URLSAFE)
        return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64url") from exc
