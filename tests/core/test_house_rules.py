"""The house rules of the layout (#16), checked on the source so they stay true.

* No library module is much over 400 lines: one concept per module.
* No module imports another package's private module (or a private name of one): a
  package's ``_x`` modules are its own. Root-level private modules (``spiffe_bridge._wire``,
  ``_lazy``, ...) are shared by the whole library, which is one package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import spiffe_bridge

ROOT = Path(spiffe_bridge.__file__).parent
#: "About 400": a module may pass it by a docstring's worth, not by another concept.
MAX_LINES = 420
GENERATED = ("_proto",)


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent)
        if any(part in GENERATED for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every dotted name ``module`` imports (``pkg.mod`` and ``pkg.mod.name`` for a from-import)."""
    package = _package_of(module, path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _private_owner(name: str) -> str | None:
    """The package whose private part ``name`` reaches into, None if it names nothing private."""
    parts = name.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i]) if i > 1 else None
    return None


def test_no_library_module_is_much_over_400_lines() -> None:
    long = {m: n for m, p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_module_imports_another_packages_private_module() -> None:
    offenders = []
    for module, path in _modules():
        package = _package_of(module, path)
        for name in _imported(module, path):
            owner = _private_owner(name)
            if owner is None or not owner.startswith("spiffe_bridge."):
                continue
            # a package's private module is its own; a module's private name is its package's
            home = owner if _is_package(owner) else owner.rpartition(".")[0]
            if package != home and not package.startswith(home + "."):
                offenders.append(f"{module} imports {name}")
    assert offenders == []


def _is_package(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def test_the_rules_catch_what_they_are_for() -> None:
    """The checker itself: a cross-package private import is seen, a root-level one is not."""
    assert _private_owner("spiffe_bridge.client._core.StreamSpec") == "spiffe_bridge.client"
    assert _private_owner("spiffe_bridge._wire.Rpc") is None
    assert _private_owner("spiffe_bridge.sources.aio._AsyncSource") == "spiffe_bridge.sources.aio"
    assert _private_owner("spiffe_bridge.client.streams") is None
