"""3. Cold start: one-shot CLI to files on disk, and the cost of importing each library.

``spiffe-bridge run -config helper.conf -daemon-mode=false`` and spiffe-helper
(same file, ``daemon_mode = false``) are started as fresh processes against
the running dev agent, alternately, each into a new empty directory. Measured:
spawn -> process exit (files are written before exit), and spawn -> newest
file mtime (the kernel's coarse clock, ~4 ms granularity). Import cost is
``python -c "import X"`` minus nothing (the interpreter baseline is its own
row), and ``python -X importtime`` of the one-shot run says which packages
dominate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import _env
from benchmarks._harness import PY, TimedAgent, helper_conf, workdir
from benchmarks._report import Result, goal, new_result
from benchmarks._stats import fmt_ratio, fmt_seconds, median, ratio, summary

NAME = "coldstart"
FILES = ("svid.pem", "svid_key.pem", "svid_bundle.pem")
IMPORTS: dict[str, str] = {
    "python (interpreter only)": "pass",
    "ours: import spiffe_bridge": "import spiffe_bridge",
    "ours: from spiffe_bridge import X509Source": "from spiffe_bridge import X509Source",
    "py-spiffe: import spiffe": "import spiffe",
}


def _bridge_argv(conf: Path) -> list[str]:
    script = Path(sys.executable).parent / "spiffe-bridge"
    head = [str(script)] if script.exists() else [PY, "-m", "spiffe_bridge"]
    return [*head, "run", "-config", str(conf), "-daemon-mode=false"]


def _one_shot(argv: list[str], cert_dir: Path) -> tuple[float, float]:
    """(spawn -> exit, spawn -> newest file mtime) in seconds; RuntimeError if it failed."""
    wall = time.time()
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, env=_env.probe_env(), timeout=60, check=False)
    exited = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}"
        )
    mtimes = [os.stat(cert_dir / name).st_mtime for name in FILES]
    return exited, max(mtimes) - wall


def _import_time(code: str) -> float:
    start = time.monotonic()
    subprocess.run([PY, "-c", code], check=True, env=_env.probe_env(), timeout=60)
    return time.monotonic() - start


def importtime_profile(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` (a Python command) under ``-X importtime`` and summarise where import time goes.

    ``packages_cumulative``: for each top-level package, the imports that
    entered it from another package, with everything they pulled in (grpc
    brings asyncio, so asyncio's time shows under both);
    ``packages_self``: module-body time summed per top-level package;
    ``ours_self``: our slowest modules by their own body time.
    """
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        capture_output=True,
        text=True,
        env=_env.probe_env(),
        timeout=60,
    )
    by_package: dict[str, int] = defaultdict(int)
    cumulative_of: dict[str, int] = defaultdict(int)
    ours: dict[str, int] = {}
    rows: list[tuple[int, str, int, int]] = []  # (depth, module, self us, cumulative us)
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, total_us, raw = line.split(":", 1)[1].split("|")
            depth = (len(raw) - len(raw.lstrip()) - 1) // 2
            rows.append((depth, raw.strip(), int(own), int(total_us)))
    # importtime prints children before their parent, indented one level deeper: walk it backwards
    stack: list[tuple[int, str]] = []
    for depth, name, self_us, cumulative in reversed(rows):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        top = name.split(".")[0]
        parent = stack[-1][1].split(".")[0] if stack else None
        stack.append((depth, name))
        by_package[top] += self_us
        if top == "spiffe_bridge":
            ours[name] = self_us
        elif parent != top and not top.startswith("_") and top not in ("site", "encodings"):
            cumulative_of[top] += cumulative  # entering this package from another one
    total = sum(by_package.values())
    return {
        "total_import_seconds": total / 1e6,
        "packages_self_seconds": {
            k: v / 1e6 for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])[:8]
        },
        "packages_cumulative_seconds": {
            k: v / 1e6 for k, v in sorted(cumulative_of.items(), key=lambda kv: -kv[1])[:8]
        },
        "ours_self_seconds": {k: v / 1e6 for k, v in sorted(ours.items(), key=lambda kv: -kv[1])[:6]},
    }


def run(quick: bool) -> Result:
    """``quick``: 1 one-shot and 1 import each, no warm-up; full: 10 and 10 after a warm-up run."""
    repeats, first = (1, 0) if quick else (10, -1)
    helper = _env.spiffe_helper()
    result = new_result(
        "cold start: one-shot CLI to files on disk; library import",
        ["what", "p50", "p99", "vs spiffe-helper / py-spiffe (p50)"],
    )
    runs: dict[str, list[float]] = defaultdict(list)
    with workdir() as wd, TimedAgent(f"{wd}/agent.sock") as agent:
        for i in range(first, repeats):  # run -1 warms the bytecode cache and the page cache, untimed
            order = ["ours", "helper"] if i % 2 == 0 else ["helper", "ours"]
            for who in order:
                if who == "helper" and helper is None:
                    continue
                cert_dir = Path(wd) / f"{who}-{i}"
                conf = helper_conf(
                    Path(f"{cert_dir}.conf"), agent.socket_path, cert_dir, recorder_fifo=None, daemon=False
                )
                argv = _bridge_argv(conf) if who == "ours" else [str(helper), "-config", str(conf)]
                exited, files_at = _one_shot(argv, cert_dir)
                if i >= 0:
                    runs[f"{who}_exit"].append(exited)
                    runs[f"{who}_files"].append(files_at)
        conf = helper_conf(
            Path(wd) / "profile.conf",
            agent.socket_path,
            Path(wd) / "profile",
            recorder_fifo=None,
            daemon=False,
        )
        profile = importtime_profile(
            [PY, "-m", "spiffe_bridge", "run", "-config", str(conf), "-daemon-mode=false"]
        )
    for i in range(first, repeats):
        names = list(IMPORTS) if i % 2 == 0 else list(reversed(IMPORTS))
        for label in names:
            took = _import_time(IMPORTS[label])
            if i >= 0:
                runs[label].append(took)
    rows = result["table"]["rows"]
    stats = {key: summary(values) for key, values in runs.items()}
    helper_exit = stats.get("helper_exit", {}).get("p50")
    helper_files = stats.get("helper_files", {}).get("p50")
    for key, label, other in (
        ("ours_files", "ours one-shot: spawn -> files on disk (mtime)", helper_files),
        ("ours_exit", "ours one-shot: spawn -> exit", helper_exit),
        ("helper_files", "spiffe-helper one-shot: spawn -> files on disk (mtime)", None),
        ("helper_exit", "spiffe-helper one-shot: spawn -> exit", None),
    ):
        if key not in stats:
            rows.append([label, "skipped", "", ""])
            continue
        vs = fmt_ratio(ratio(stats[key]["p50"], other)) if other else ""
        rows.append([label, fmt_seconds(stats[key]["p50"]), fmt_seconds(stats[key]["p99"]), vs])
    pyspiffe = stats["py-spiffe: import spiffe"]["p50"]
    for label in IMPORTS:
        vs = fmt_ratio(ratio(stats[label]["p50"], pyspiffe)) if label.startswith("ours") else ""
        rows.append([label, fmt_seconds(stats[label]["p50"]), fmt_seconds(stats[label]["p99"]), vs])
    result["results"] = {"stats": stats, "samples": dict(runs), "importtime": profile}
    files = stats["ours_files"]["p50"]
    goal(result, "ours one-shot <= 0.35 s to files (p50)", fmt_seconds(files), files <= 0.35)

    def listing(key: str) -> str:
        return ", ".join(f"{k} {fmt_seconds(v)}" for k, v in profile[key].items())

    result["notes"].append(
        f"-X importtime of the one-shot run: {fmt_seconds(profile['total_import_seconds'])} importing; "
        f"third-party packages with what they pull in: {listing('packages_cumulative_seconds')}"
    )
    result["notes"].append(f"our slowest module bodies (self time): {listing('ours_self_seconds')}")
    base = median(runs["python (interpreter only)"])
    result["notes"].append(
        f"interpreter start alone is {fmt_seconds(base)}; {repeats} runs each, alternating order"
    )
    if helper is None:
        result["notes"].append(_env.HELPER_MISSING)
    return result
