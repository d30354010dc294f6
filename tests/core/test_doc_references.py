"""What the docs point at exists: test files and names, source files, ``spiffe_bridge`` names.

The proof column of docs/reliability.md and the layout in the README name tests and modules;
a move or a rename would otherwise break them silently.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])


def _all(pattern: str) -> set[str]:
    return {m for doc in DOCS for m in re.findall(pattern, doc.read_text())}


def test_named_test_files_and_tests_exist() -> None:
    files = _all(r"tests/[a-z_/]+\.py")
    assert sorted(f for f in files if not (REPO / f).is_file()) == []
    defined = {
        m for f in (REPO / "tests").rglob("test_*.py") for m in re.findall(r"def (test_\w+)", f.read_text())
    }
    named = {name for name in _all(r"::(test_\w+)")}
    assert sorted(named - defined) == []


def test_named_source_files_exist() -> None:
    paths = _all(r"`((?:spiffe_bridge/)?[a-z_]+/[a-z_0-9]+\.py)`")
    package = REPO / "spiffe_bridge"
    missing = [p for p in paths if not (REPO / p).is_file() and not (package / p).is_file()]
    assert (
        sorted(p for p in missing if not p.startswith(("tests/", "benchmarks/", "scripts/", "examples/")))
        == []
    )


def test_named_spiffe_bridge_names_import() -> None:
    broken = []
    for dotted in _all(r"\bspiffe_bridge(?:\.[a-zA-Z_0-9]+)+"):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                broken.append(dotted)
            break
        else:
            broken.append(dotted)
    assert sorted(broken) == []
