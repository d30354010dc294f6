"""Reload-action recorder: the ``cmd`` a sidecar starts, timestamping each ``renew_signal``.

Run by spiffe-helper and by ``spiffe-bridge run`` alike (``cmd`` + ``cmd_args``
+ ``renew_signal = "SIGUSR1"``), so both sidecars are measured up to the same
point: every file of an update is on disk and the reload action has fired.
Signals are taken synchronously with ``sigtimedwait`` (no handler latency);
the process ends when its sidecar (parent) goes away. Standalone on purpose:
it imports nothing from the project, so starting it costs the same for both.
"""

import os
import signal
import sys
import time


def main() -> None:
    """Write ``start <t> <pid>``, then ``event <t>`` per SIGUSR1/SIGHUP, to the FIFO in argv[1]."""
    fifo = os.open(sys.argv[1], os.O_WRONLY)
    wanted = {signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    parent = os.getppid()
    os.write(fifo, f"start {time.monotonic()} {os.getpid()}\n".encode())
    while True:
        info = signal.sigtimedwait(wanted, 1.0)
        now = time.monotonic()
        if info is None:
            if os.getppid() != parent:
                return
            continue
        if info.si_signo in (signal.SIGTERM, signal.SIGINT):
            return
        os.write(fifo, f"event {now} {info.si_signo}\n".encode())


if __name__ == "__main__":
    main()
