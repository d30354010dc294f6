"""Split concatenated DER blobs (the Workload API's chain and bundle encoding)."""

from __future__ import annotations

from spiffe_bridge.errors import ValidationError


def split_der(blob: bytes, what: str) -> list[bytes]:
    """Split ``blob`` into top-level DER SEQUENCEs; raise ValidationError if it is malformed."""
    items: list[bytes] = []
    view = memoryview(blob)
    pos, end = 0, len(blob)
    while pos < end:
        if view[pos] != 0x30:
            raise ValidationError(f"{what}: expected a DER SEQUENCE at byte {pos}")
        if pos + 2 > end:
            raise ValidationError(f"{what}: truncated DER header at byte {pos}")
        first = view[pos + 1]
        header = 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + 2 + count > end:
                raise ValidationError(f"{what}: invalid DER length at byte {pos}")
            length = int.from_bytes(view[pos + 2 : pos + 2 + count], "big")
            header += count
        stop = pos + header + length
        if stop > end:
            raise ValidationError(f"{what}: truncated DER element at byte {pos}")
        items.append(bytes(view[pos:stop]))
        pos = stop
    return items
