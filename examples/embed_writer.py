"""Embed spiffe-bridge's writers in another agent: every X509Source update becomes an atomic file set.

Run against the embedded dev agent:
    spiffe-bridge dev-agent --socket /tmp/sb-demo.sock &
    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/sb-demo.sock python examples/embed_writer.py /tmp/sb-creds 2
"""

from __future__ import annotations

import logging
import queue
import sys

from spiffe_bridge import FileSetWriter, SpiffeBridgeError, X509Context, X509Options, X509Source, render_x509

log = logging.getLogger("embed-writer")


def main(directory: str, updates: int = 2) -> int:
    """Keep ``directory`` holding the current SVID as PEM files; return after ``updates`` rotations."""
    # Symlink layout (the default): readers see the old set or the new one, never a mix.
    writer = FileSetWriter(directory)
    options = X509Options(include_federated_domains=True)  # spiffe-helper's names, keys 0600
    written: queue.Queue[int] = queue.Queue()

    def on_update(ctx: X509Context) -> None:
        # Called on a thread of the source's own with the newest update only, so disk I/O may block here.
        try:
            result = writer.write(render_x509("pem", ctx, options))
        except SpiffeBridgeError as exc:  # FormatError or WriteError: the previous set stays in place
            log.error("credentials not written: %s", exc)
            return
        if result.changed:
            written.put(ctx.default_svid.leaf.serial_number)

    with X509Source(timeout=10) as source:  # address from SPIFFE_ENDPOINT_SOCKET
        unsubscribe = source.subscribe(on_update)  # delivers the current update at once
        try:
            for _ in range(updates + 1):
                print(f"wrote {directory}: serial {written.get(timeout=120):x}", flush=True)
        finally:
            unsubscribe()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2))
