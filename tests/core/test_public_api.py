"""The public API: lazy exports agree everywhere, aliases are the same objects, errors share one base.

Every package root states its names three times (``__all__`` for ``import *`` and type checkers,
``TYPE_CHECKING`` imports for mypy, the ``lazy_exports`` table for runtime); these tests make the
three agree, down to the defining module, so a name cannot be typed but missing or vice versa.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import spiffe_bridge
from spiffe_bridge._lazy import lazy_exports

ROOT = pathlib.Path(spiffe_bridge.__file__).resolve().parent

#: Every package whose __init__ exports names lazily.
LAZY_PACKAGES = [
    "spiffe_bridge",
    "spiffe_bridge.broker",
    "spiffe_bridge.client",
    "spiffe_bridge.devagent",
    "spiffe_bridge.relay",
    "spiffe_bridge.sources",
    "spiffe_bridge.tls",
]


def _resolve(module: str, package: str, level: int = 0) -> str:
    if level:
        return ".".join(
            package.split(".")[: len(package.split(".")) - level + 1] + ([module] if module else [])
        )
    return package + module if module.startswith(".") else module


def _declared(package: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """``__all__``, the TYPE_CHECKING imports and the lazy table of ``package``, read from its source."""
    tree = ast.parse((ROOT.parent / package.replace(".", "/") / "__init__.py").read_text())
    all_names: list[str] = []
    typed: dict[str, str] = {}
    lazy: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            all_names = ast.literal_eval(node.value)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), ast.dump(imp)
                for alias in imp.names:
                    assert alias.asname is None, "export names as they are defined"
                    typed[alias.name] = _resolve(imp.module or "", package, imp.level)
            (assign,) = node.orelse
            assert isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Call)
            table = ast.literal_eval(assign.value.args[1])
            for module, names in table.items():
                for name in names:
                    lazy[name] = _resolve(module, package)
    return all_names, typed, lazy


def test_one_lazy_export_helper() -> None:
    """No package writes its own ``__getattr__``; every one using the helper is checked below."""
    using = []
    for init in sorted(ROOT.rglob("__init__.py")):
        text = init.read_text()
        assert "def __getattr__" not in text, f"{init}: use spiffe_bridge._lazy.lazy_exports"
        if "lazy_exports(" in text:
            using.append(".".join(init.parent.relative_to(ROOT.parent).parts))
    assert sorted(using) == sorted(LAZY_PACKAGES)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_name_lists_agree(package: str) -> None:
    all_names, typed, lazy = _declared(package)
    assert all_names, f"{package} has no __all__"
    assert len(all_names) == len(set(all_names)), "a name is listed twice in __all__"
    assert sorted(all_names) == sorted(typed) == sorted(lazy)
    assert typed == lazy, "the TYPE_CHECKING import and the lazy table name different modules"


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_name_resolves_from_its_module_and_dir_lists_it(package: str) -> None:
    module = importlib.import_module(package)
    _, _, lazy = _declared(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is getattr(importlib.import_module(lazy[name]), name)
    listed = dir(module)
    assert len(listed) == len(set(listed)), "dir() repeats names"
    assert set(module.__all__) <= set(listed)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_star_import(package: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {package} import *", namespace)
    assert set(importlib.import_module(package).__all__) <= set(namespace)


def test_import_stays_cheap() -> None:
    """The root and the packages import no gRPC or cryptography until a name needs them."""
    code = (
        "import sys, spiffe_bridge, spiffe_bridge.sources, spiffe_bridge.tls, spiffe_bridge.broker, "
        "spiffe_bridge.client, spiffe_bridge.relay, spiffe_bridge.devagent; dir(spiffe_bridge); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'cryptography')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_embedding_names_at_the_root() -> None:
    from spiffe_bridge import fileset, formats

    assert spiffe_bridge.FileSetWriter is fileset.FileSetWriter
    assert spiffe_bridge.FileSpec is fileset.FileSpec
    assert spiffe_bridge.render_x509 is formats.render_x509
    assert spiffe_bridge.render_jwt is formats.render_jwt
    assert spiffe_bridge.X509Options is formats.X509Options
    assert spiffe_bridge.JwtOptions is formats.JwtOptions
    assert spiffe_bridge.X509_FORMATS == formats.X509_FORMATS
    assert "pem" in spiffe_bridge.X509_FORMATS


@pytest.mark.parametrize(
    ("module", "canonical", "alias"),
    [
        ("spiffe_bridge", "JwtSource", "JWTSource"),
        ("spiffe_bridge", "AsyncJwtSource", "AsyncJWTSource"),
        ("spiffe_bridge.sources", "JwtSource", "JWTSource"),
        ("spiffe_bridge.sources", "AsyncJwtSource", "AsyncJWTSource"),
        ("spiffe_bridge.sources", "JwtBundleSourceLike", "JWTBundleSourceLike"),
        ("spiffe_bridge.devagent", "X509SvidMaterial", "X509SVIDMaterial"),
    ],
)
def test_old_spellings_are_the_same_objects(module: str, canonical: str, alias: str) -> None:
    """docs/library.md "Names": one casing (Jwt, Svid as words), the earlier spelling kept as an alias."""
    mod = importlib.import_module(module)
    assert getattr(mod, alias) is getattr(mod, canonical)
    assert getattr(mod, canonical).__name__ == canonical


def test_config_errors_are_spiffe_bridge_errors_and_still_value_errors() -> None:
    from spiffe_bridge import errors
    from spiffe_bridge.sidecar import hcl, schema

    assert schema.ConfigError is errors.ConfigError is spiffe_bridge.ConfigError
    assert hcl.HclError is errors.HclError is spiffe_bridge.HclError
    for cls in (errors.ConfigError, errors.HclError):
        assert issubclass(cls, spiffe_bridge.SpiffeBridgeError)
        assert issubclass(cls, ValueError)
    with pytest.raises(spiffe_bridge.SpiffeBridgeError, match="line 2") as caught:
        hcl.loads('a = 1\nb = "unterminated\n')
    assert isinstance(caught.value, errors.HclError)
    assert caught.value.line == 2


def test_lazy_exports_refuses_a_disagreeing_all() -> None:
    namespace: dict[str, Any] = {"__name__": "pkg", "__all__": ["A", "B"]}
    with pytest.raises(ImportError, match=r"missing \['C'\], unknown \['B'\]"):
        lazy_exports(namespace, {".a": ["A", "C"]})
    with pytest.raises(ImportError, match=r"'A' is exported from both pkg\.a and pkg\.b"):
        lazy_exports({"__name__": "pkg", "__all__": ["A"]}, {".a": ["A"], ".b": ["A"]})


def test_lazy_exports_caches_what_it_loaded() -> None:
    namespace: dict[str, Any] = {"__name__": "spiffe_bridge", "__all__": ["SpiffeId"]}
    getattr_, dir_ = lazy_exports(namespace, {".spiffeid": ["SpiffeId"]})
    from spiffe_bridge.spiffeid import SpiffeId

    assert getattr_("SpiffeId") is SpiffeId
    assert namespace["SpiffeId"] is SpiffeId  # the next lookup never reaches __getattr__
    assert dir_().count("SpiffeId") == 1
