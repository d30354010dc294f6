"""2. Recovery: agent stopped and started again -> first good update in each client.

Every cycle stops the dev agent (streams drop, socket removed), keeps it down
for ``DOWN`` seconds, rotates the SVIDs while it is down (so the first message
after the restart carries new material: ours deduplicates identical
re-deliveries and would otherwise, correctly, announce nothing), starts it
again and takes the time when ``start()`` returned -- the socket accepts from
then on. Each client reports when it holds the new SVID (callback / files
written and reload signalled). All clients run at once, each in its own
process with its own event FIFO: reconnect delays are dominated by backoff
timers, not CPU, so measuring them side by side costs a few ms of accuracy
and saves minutes.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import _env
from benchmarks._harness import ROTATION_CLIENTS, EventPipe, Proc, TimedAgent, start_client, workdir
from benchmarks._report import Result, goal, new_result
from benchmarks._stats import fmt_ratio, fmt_seconds, ratio, summary

NAME = "recovery"
#: Seconds the agent stays down per cycle (a SPIRE agent restart takes about this long).
DOWN = 1.0
#: Seconds between a recovery and the next stop: streams must count as healthy again.
SETTLE = 2.0
#: A client that has not recovered after this long counts as a miss for that cycle.
GIVE_UP = 20.0


def run(quick: bool) -> Result:
    """``quick``: 1 cycle; full: 8 cycles."""
    cycles, settle = (1, 0.5) if quick else (8, SETTLE)
    helper = _env.spiffe_helper()
    clients = [c for c in ROTATION_CLIENTS if c.kind != "helper" or helper is not None]
    result = new_result(
        f"recovery after an agent restart ({DOWN:g} s down): socket accepting -> new SVID usable",
        ["client", "p50", "max", "missed", "vs py-spiffe (p50)"],
    )
    samples: dict[str, list[float]] = {c.key: [] for c in clients}
    missed: dict[str, int] = {c.key: 0 for c in clients}
    with workdir() as wd, TimedAgent(f"{wd}/agent.sock") as agent:
        pipes: dict[str, EventPipe] = {}
        procs: dict[str, Proc] = {}
        try:
            for client in clients:
                pipes[client.key] = EventPipe(f"{wd}/{client.key}")
                procs[client.key], _ = start_client(client, agent, pipes[client.key], wd, client.key, helper)
            time.sleep(settle)
            for _ in range(cycles):
                for pipe in pipes.values():
                    pipe.drain()
                agent.stop()
                time.sleep(DOWN)
                agent.rotate()
                agent.start()
                back = time.monotonic()
                for client in clients:
                    remaining = max(0.1, back + GIVE_UP - time.monotonic())
                    try:
                        event = pipes[client.key].get("event", timeout=remaining)
                    except TimeoutError:
                        missed[client.key] += 1
                        continue
                    samples[client.key].append(event.t - back)
                time.sleep(settle)
        finally:
            for proc in procs.values():
                proc.stop()
            for pipe in pipes.values():
                pipe.close()
    stats: dict[str, Any] = {}
    base = summary(samples["pyspiffe_callback"])["p50"]
    for client in ROTATION_CLIENTS:
        if client.key not in samples:
            result["table"]["rows"].append([client.label, "skipped", "", "", ""])
            continue
        s = summary(samples[client.key])
        stats[client.key] = {**s, "missed": missed[client.key], "samples": samples[client.key]}
        vs = "(baseline)" if client.key == "pyspiffe_callback" else fmt_ratio(ratio(s["p50"], base))
        row = [client.label, fmt_seconds(s["p50"]), fmt_seconds(s["max"]), str(missed[client.key]), vs]
        result["table"]["rows"].append(row)
    result["results"] = {"down_seconds": DOWN, "cycles": cycles, "clients": stats}
    worst = max(stats[k]["p50"] for k in ("ours_callback", "ours_files", "ours_sidecar"))
    any_missed = any(missed[k] for k in ("ours_callback", "ours_files", "ours_sidecar"))
    goal(
        result,
        "ours <= 0.3 s after the socket is back (p50, every ours row)",
        f"worst ours p50 {fmt_seconds(worst)}, py-spiffe {fmt_seconds(base)}",
        worst <= 0.3 and not any_missed,
    )
    sidecar = stats["ours_sidecar"]["p50"]
    goal(  # issue #15
        result,
        "sidecar recovery after an agent restart p50 <= 150 ms",
        fmt_seconds(sidecar),
        sidecar <= 0.150 and not missed["ours_sidecar"],
    )
    if helper is None:
        result["notes"].append(_env.HELPER_MISSING)
    result["notes"].append(
        f"{cycles} restart cycles, all clients connected at once (separate processes); "
        f"the agent rotates while down so the first message after the restart is new material"
    )
    return result
