"""``python -m benchmarks [--quick] [--only NAME ...]``: run the benchmarks, print, write JSON.

Each benchmark module exposes ``NAME`` and ``run(quick) -> Result``. A run
prints one Markdown table per benchmark plus its goals, then writes the raw
numbers to ``benchmarks/results/latest.json`` and the printed report to
``benchmarks/results/latest.md`` (copy it to RESULTS.md to publish a run).
A benchmark that fails is reported as failed and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import _env
from benchmarks._report import Result, render, render_machine

#: Module per benchmark, in the order they run and print.
MODULES: dict[str, str] = {
    "rotation": "benchmarks.rotation",
    "recovery": "benchmarks.recovery",
    "coldstart": "benchmarks.coldstart",
    "idle": "benchmarks.idle",
    "jwt": "benchmarks.jwt_validation",
    "scale": "benchmarks.scale",
    "relay": "benchmarks.relay_overhead",
    "haproxy": "benchmarks.hot_update",
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _clean(value: Any) -> Any:
    """JSON has no NaN: turn it into null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run_one(name: str, quick: bool) -> Result:
    """Run one benchmark; a failure becomes a result that says so."""
    started = time.monotonic()
    try:
        result: Result = importlib.import_module(MODULES[name]).run(quick)
    except Exception as exc:
        traceback.print_exc()
        result = {"title": name, "error": f"{type(exc).__name__}: {exc}", "goals": [], "notes": []}
    result["seconds"] = round(time.monotonic() - started, 1)
    if quick:  # tiny samples say nothing about speed: report the figures, judge no goal
        for g in result.get("goals", []):
            g["met"] = None
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, report; exit 1 if any benchmark failed to run (never for speed)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the scripts work")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(MODULES),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(MODULES)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json", help="results JSON path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = args.only or list(MODULES)
    started = time.monotonic()
    machine = _env.machine("/tmp")
    results: dict[str, Result] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, args.quick)
        print(render(name, results[name]), flush=True)
    elapsed = time.monotonic() - started
    report = "## Benchmark results\n\n" + render_machine(machine, args.quick, elapsed) + "\n"
    report += "\n".join(render(n, r) for n, r in results.items())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "quick": args.quick, "seconds": round(elapsed, 1), "benchmarks": results}
    args.out.write_text(json.dumps(_clean(payload), indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} ({elapsed:.0f} s)", file=sys.stderr)
    return 1 if any(r.get("error") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
