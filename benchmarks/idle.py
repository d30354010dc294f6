"""4. Idle cost while connected: CPU time per second and resident memory of a holding process.

Four processes hold a live Workload API stream to the same dev agent and do
nothing else: ours (``X509Source`` with one subscriber), py-spiffe
(``X509Source`` with one subscriber), ours as a sidecar daemon
(``spiffe-bridge run``) and spiffe-helper as a daemon, the latter two with the
same helper.conf. After they settle, CPU is read twice from
``/proc/<pid>/task/*/schedstat`` (nanoseconds, every thread) -- the tick
counters in ``/proc/<pid>/stat`` have 10 ms resolution, too coarse for a
0.1 ms/s goal -- RSS from ``/proc/<pid>/status``, and USS (private pages) and
PSS (shared pages split between the processes that map them) from
``/proc/<pid>/smaps_rollup``: RSS counts every shared library page in full, USS is
what the process alone costs. Idle processes do not compete for CPU, so all are
sampled over the same window.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks import _env
from benchmarks._harness import (
    EventPipe,
    Proc,
    TimedAgent,
    helper_conf,
    probe_argv,
    sidecar_argv,
    spawn,
    workdir,
)
from benchmarks._report import Result, goal, new_result
from benchmarks._stats import fmt_bytes, fmt_ratio, ratio

NAME = "idle"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid`` (schedstat, ns resolution)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listdir and open
    return total / 1e9


def tick_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat (whole process, ended threads included; 10 ms ticks)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon (bytes) and thread count from /proc/<pid>/status.

    RssAnon is the process's own memory (heap, stacks, Python objects); the rest
    of RSS is mapped library text and data (grpc's cygrpc, cryptography's Rust
    module, libpython, OpenSSL), shared with any other process using them.
    """
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
    out.update(proportional(pid))
    return out


def proportional(pid: int) -> dict[str, int]:
    """PSS and USS (Private_Clean + Private_Dirty) in bytes from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("Pss", "Private_Clean", "Private_Dirty"):
                fields[key] = int(value.split()[0]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"Pss": fields.get("Pss", 0), "Uss": uss}


def _wait_files(directory: Path, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (directory / "svid_bundle.pem").exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} wrote no files\n{proc.log_tail()}")
        time.sleep(0.05)


def run(quick: bool) -> Result:
    """``quick``: sample 1.5 s; full: 25 s, after 3 s of settling."""
    window, settle = (1.5, 0.5) if quick else (25.0, 3.0)
    helper = _env.spiffe_helper()
    result = new_result(
        f"idle while connected ({window:g} s window): CPU per second and memory",
        ["process", "CPU ms/s", "RSS", "USS", "PSS", "peak RSS", "threads", "vs peer (CPU / RSS / USS)"],
    )
    procs: dict[str, Proc] = {}
    with workdir() as wd, TimedAgent(f"{wd}/agent.sock") as agent:
        pipe = EventPipe(wd)
        try:
            probes = (
                ("ours_source", "ours-callback"),
                ("ours_aio_source", "ours-aio"),
                ("pyspiffe_source", "pyspiffe-callback"),
            )
            for key, mode in probes:
                procs[key] = spawn(key, probe_argv(mode, agent.socket_path, pipe.path), wd)
                pipe.get("ready", 30)
            sidecars: list[tuple[str, list[str] | None]] = [("ours_sidecar", [])]
            sidecars.append(("spiffe_helper", [str(helper)] if helper else None))
            for key, head in sidecars:
                if head is None:
                    continue
                cert_dir = Path(wd) / key
                conf = helper_conf(
                    Path(f"{cert_dir}.conf"), agent.socket_path, cert_dir, recorder_fifo=None, daemon=True
                )
                argv = sidecar_argv(conf) if key == "ours_sidecar" else [*head, "-config", str(conf)]
                procs[key] = spawn(key, argv, wd)
                _wait_files(cert_dir, procs[key])
            time.sleep(settle)
            before = {k: (cpu_seconds(p.pid), tick_seconds(p.pid)) for k, p in procs.items()}
            started = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - started
            after = {k: (cpu_seconds(p.pid), tick_seconds(p.pid), memory(p.pid)) for k, p in procs.items()}
        finally:
            for proc in procs.values():
                proc.stop()
            pipe.close()
    stats: dict[str, Any] = {}
    for key in procs:
        cpu = (after[key][0] - before[key][0]) / elapsed
        ticks = (after[key][1] - before[key][1]) / elapsed
        stats[key] = {"cpu_s_per_s": cpu, "cpu_s_per_s_ticks": ticks, **after[key][2]}
    labels = {
        "ours_source": ("ours: X509Source", "pyspiffe_source"),
        "ours_aio_source": ("ours: AsyncX509Source (asyncio)", "pyspiffe_source"),
        "pyspiffe_source": ("py-spiffe: X509Source", None),
        "ours_sidecar": ("ours: `spiffe-bridge run` daemon", "spiffe_helper"),
        "spiffe_helper": ("spiffe-helper daemon", None),
    }
    for key, (label, peer) in labels.items():
        if key not in stats:
            result["table"]["rows"].append([label, "skipped", "", "", "", "", "", ""])
            continue
        s = stats[key]
        vs = ""
        if peer and peer in stats:
            p = stats[peer]
            cpu_vs = fmt_ratio(ratio(s["cpu_s_per_s"], p["cpu_s_per_s"]))
            rss_vs, uss_vs = fmt_ratio(ratio(s["VmRSS"], p["VmRSS"])), fmt_ratio(ratio(s["Uss"], p["Uss"]))
            vs = f"{cpu_vs} / {rss_vs} / {uss_vs}"
        row = [
            label,
            f"{s['cpu_s_per_s'] * 1e3:.3f}",
            fmt_bytes(s["VmRSS"]),
            fmt_bytes(s["Uss"]),
            fmt_bytes(s["Pss"]),
            fmt_bytes(s["VmHWM"]),
            str(s["Threads"]),
            vs,
        ]
        result["table"]["rows"].append(row)
    result["results"] = {"window_seconds": elapsed, "processes": stats}
    for key in ("ours_source", "ours_aio_source", "ours_sidecar"):  # issue #15's goals
        s = stats[key]
        label = labels[key][0]
        goal(
            result,
            f"{label}: <= 0.1 ms CPU per second",
            f"{s['cpu_s_per_s'] * 1e3:.3f} ms/s",
            s["cpu_s_per_s"] <= 0.1e-3,
        )
    s = stats["ours_sidecar"]
    rss_goal = s["VmRSS"] <= 40 * 2**20
    goal(result, f"{labels['ours_sidecar'][0]}: RSS <= 40 MiB", fmt_bytes(s["VmRSS"]), rss_goal)
    if helper is None:
        result["notes"].append(_env.HELPER_MISSING)
    result["notes"].append("CPU from schedstat of every thread over the same window for all processes")
    result["notes"].append(
        "grpcio's blocking stream iterator wakes its thread every 0.1 s (grpc/_common.py "
        "MAXIMUM_WAIT_TIMEOUT), in ours and py-spiffe alike; the asyncio source has no such poll"
    )
    return result
