"""The shape every benchmark returns, and how a run is printed and rendered as Markdown.

A benchmark returns a plain dict (it goes to JSON as is): ``title``, ``table``
(``columns`` + ``rows`` of display strings), ``results`` (raw numbers in
seconds/bytes), ``goals`` (what the project promised, measured, met or not, or
None when it could not be measured) and ``notes`` (how to read the numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks._stats import table

Result = dict[str, Any]


def new_result(title: str, columns: Sequence[str]) -> Result:
    """An empty result with its table header."""
    return {
        "title": title,
        "table": {"columns": list(columns), "rows": []},
        "results": {},
        "goals": [],
        "notes": [],
    }


def goal(result: Result, what: str, measured: str, met: bool | None) -> None:
    """Record a goal: ``met`` None means it could not be measured in this run."""
    result["goals"].append({"goal": what, "measured": measured, "met": met})


def _mark(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "MISSED")


def render(name: str, result: Result) -> str:
    """One benchmark as Markdown: heading, table, goals, notes."""
    lines = [f"### {name}: {result.get('title', '')}", ""]
    if result.get("error"):
        lines += [f"**failed:** {result['error']}", ""]
    tab = result.get("table") or {}
    if tab.get("rows"):
        lines += [table(tab["columns"], tab["rows"]), ""]
    for g in result.get("goals", []):
        lines.append(f"- goal {_mark(g['met'])}: {g['goal']} -- measured {g['measured']}")
    for note in result.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def render_machine(machine: dict[str, Any], quick: bool, elapsed: float) -> str:
    """The run's header: date, machine, versions, mode."""
    return "\n".join(
        [
            f"- date: {machine['date']}; run took {elapsed:.0f} s ({'quick' if quick else 'full'} mode)",
            f"- machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['ram_gib']} GiB RAM, "
            f"Linux {machine['kernel']}; files written to {machine['workdir_fs']}",
            f"- Python {machine['python']}, grpcio {machine['grpcio']}, protobuf {machine['protobuf']}, "
            f"cryptography {machine['cryptography']}, py-spiffe {machine['py_spiffe']}, "
            f"spiffe-helper {machine['spiffe_helper'] or 'not built'}",
            f"- spiffe-bridge at commit {machine.get('commit') or 'unknown'}"
            + (
                f" plus uncommitted changes to {', '.join(machine['library_changes_not_committed'])}"
                if machine.get("library_changes_not_committed")
                else " (library files as committed)"
            ),
            "",
        ]
    )
