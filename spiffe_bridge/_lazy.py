"""One lazy-export mechanism (PEP 562) for the packages' ``__init__`` modules.

A package states which module defines each public name; the name is imported on
first use and then cached in the package, so ``import spiffe_bridge`` (or
``spiffe_bridge.tls``...) loads neither gRPC nor cryptography until a name that
needs them is used. The package keeps a literal ``__all__`` and ``TYPE_CHECKING``
imports for type checkers; this helper refuses an ``__all__`` that disagrees with
the table, and tests/core/test_public_api.py checks the imports too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], homes: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose ``globals()`` is ``namespace``.

    ``homes`` maps a defining module (absolute, or ``".sync"`` for a submodule of
    the package) to the public names it defines.
    """
    package: str = namespace["__name__"]
    exports: dict[str, str] = {}
    for module, names in homes.items():
        target = package + module if module.startswith(".") else module
        for name in names:
            if name in exports:
                raise ImportError(f"{package}: {name!r} is exported from both {exports[name]} and {target}")
            exports[name] = target
    declared = set(namespace.get("__all__", ()))
    if declared != set(exports):
        missing, extra = sorted(set(exports) - declared), sorted(declared - set(exports))
        raise ImportError(
            f"{package}: __all__ disagrees with its exports (missing {missing}, unknown {extra})"
        )

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
