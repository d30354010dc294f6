"""7. Relay overhead: rotation latency to N downstream clients, direct vs through the relay.

N raw Workload API streams (one channel each, no decoding: the client side
costs the same in both set-ups) run in one probe process, either straight on
the dev agent or on a ``spiffe_bridge.relay.Relay`` running in its own
process in front of it. Per rotation the latency runs from the agent's push
(the first one, when it pushes to N streams itself) to the moment the first
and the last of the N clients hold the message. Set-ups run one after the
other against the same agent; the difference of the medians is the overhead.
The relay validates every update before forwarding it (the default); with one
client it also runs with ``forward_before_verify`` (the fast path: validation in
parallel with the clients'), to show what that saves.
"""

from __future__ import annotations

import random
import time
from typing import Any

from benchmarks._harness import EventPipe, Proc, TimedAgent, probe_argv, spawn, wait_ready, workdir
from benchmarks._report import Result, goal, new_result
from benchmarks._stats import fmt_delta, fmt_seconds, summary

NAME = "relay"
#: Issue #7: the relay adds at most this much to rotation delivery at p50 (one client).
GOAL_ADDED_P50 = 0.002
#: Issue #15: the same with validation before forwarding (the default since issue #14).
GOAL_VALIDATED_P50 = 0.001
FAST_PATH = "relay, forward before verify"
#: Set-up name -> extra probe arguments of the relay process (None: no relay).
PATHS: dict[str, list[str] | None] = {"direct": None, "relay": [], FAST_PATH: ["forward-before-verify"]}


def _rotations(
    agent: TimedAgent, pipe: EventPipe, count: int, warmup: int
) -> tuple[list[float], list[float]]:
    """(push -> first client, push -> last client) for ``count`` rotations after ``warmup``."""
    first: list[float] = []
    last: list[float] = []
    for i in range(warmup + count):
        time.sleep(0.03 + random.random() * 0.03)
        mark = agent.mark()
        agent.rotate()
        event = pipe.get("event", timeout=30)
        pushes = agent.pushes_since(mark)
        if not pushes:
            raise RuntimeError("the agent recorded no push for a rotation")
        t0 = min(p.at for p in pushes)
        if i >= warmup:
            first.append(float(event.fields[0]) - t0)
            last.append(float(event.fields[1]) - t0)
    return first, last


def run(quick: bool) -> Result:
    """``quick``: 3 clients, 2 rotations; full: 1 and 100 clients, 60 and 30 rotations."""
    try:
        from spiffe_bridge.relay import Relay  # noqa: F401 - availability check only
    except ImportError:
        result = new_result("relay overhead", [])
        result["notes"].append("relay not available")
        return result
    sizes = [(3, 2)] if quick else [(1, 60), (100, 30)]
    paths = {n: list(PATHS) if n == sizes[0][0] else ["direct", "relay"] for n, _ in sizes}
    warmup = 1 if quick else 3
    result = new_result(
        "relay overhead: agent push -> N downstream clients hold the update",
        [
            "clients",
            "path",
            "first client p50",
            "last client p50",
            "last client p99",
            "added by relay (p50 / p99)",
        ],
    )
    stats: dict[str, Any] = {}
    with workdir() as wd, TimedAgent(f"{wd}/agent.sock", max_workers=256) as agent:
        pipe = EventPipe(wd)
        try:
            for n, count in sizes:
                for i, path in enumerate(paths[n]):
                    procs: list[Proc] = []
                    extra = PATHS[path]
                    try:
                        target = agent.socket_path
                        if extra is not None:
                            target = f"{wd}/relay-{n}-{i}.sock"
                            argv = probe_argv("relay", agent.socket_path, pipe.path, target, *extra)
                            relay = spawn(f"relay-{n}-{i}", argv, wd)
                            procs.append(relay)
                            wait_ready(pipe, relay)
                        clients = spawn(
                            f"fanout-{path}-{n}", probe_argv("fanout", target, pipe.path, str(n)), wd
                        )
                        procs.append(clients)
                        wait_ready(pipe, clients, timeout=60)
                        time.sleep(0.3)
                        pipe.drain()
                        first, last = _rotations(agent, pipe, count, warmup)
                    finally:
                        for proc in reversed(procs):
                            proc.stop()
                        pipe.drain()
                    stats[f"{path}_{n}"] = {
                        "first": summary(first),
                        "last": summary(last),
                        "samples_last": last,
                    }
        finally:
            pipe.close()
    rows = result["table"]["rows"]
    added: dict[str, tuple[float, float]] = {}
    for n, _ in sizes:
        d = stats[f"direct_{n}"]["last"]
        for path in paths[n]:
            s = stats[f"{path}_{n}"]
            shown = ""
            if path != "direct":
                r = s["last"]
                added[f"{path}_{n}"] = delta = (r["p50"] - d["p50"], r["p99"] - d["p99"])
                shown = f"{fmt_delta(delta[0])} / {fmt_delta(delta[1])}"
            rows.append(
                [
                    str(n),
                    path,
                    fmt_seconds(s["first"]["p50"]),
                    fmt_seconds(s["last"]["p50"]),
                    fmt_seconds(s["last"]["p99"]),
                    shown,
                ]
            )
    result["results"] = {"setups": stats, "added_p50_p99": added}
    n1 = sizes[0][0]
    one = added[f"relay_{n1}"][0]
    measured = ", ".join(f"{fmt_delta(added[f'relay_{n}'][0])} at {n}" for n, _ in sizes)
    fast = f"forward before verify: {fmt_delta(added[f'{FAST_PATH}_{n1}'][0])}"
    goal(
        result,
        f"relay adds <= {fmt_seconds(GOAL_ADDED_P50)} at p50 (1 client)",
        f"{measured} clients (p50); {fast}",
        one <= GOAL_ADDED_P50 if n1 == 1 else None,
    )
    goal(
        result,
        f"relay validating before forwarding adds <= {fmt_seconds(GOAL_VALIDATED_P50)} at p50 (1 client)",
        f"{fmt_delta(one)} at {n1} clients (p50)",
        one <= GOAL_VALIDATED_P50 if n1 == 1 else None,
    )
    result["notes"].append(
        "direct: the dev agent (Python) builds and sends the message once per stream; through the relay "
        "it sends once and the relay (grpc.aio, one event loop) writes the same bytes to every stream"
    )
    result["notes"].append(
        "relay (default) validates each update before forwarding it; 'forward before verify' hands "
        "the agent's bytes on first and validates in parallel: the difference is the validation time"
    )
    return result
