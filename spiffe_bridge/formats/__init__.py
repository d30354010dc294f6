"""Credential formats: pure functions from validated material + options to a list of FileSpec.

Each format lives in its own module; this package maps format names to them. The
result goes to :class:`spiffe_bridge.fileset.FileSetWriter`, which writes it
atomically. Nothing here touches the disk or the network.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from spiffe_bridge.formats._material import select_svid
from spiffe_bridge.formats.options import (
    COMMON_OPTIONS,
    FederatedLayout,
    FormatError,
    JwtOptions,
    X509Options,
)

if TYPE_CHECKING:
    from spiffe_bridge.fileset import FileSpec
    from spiffe_bridge.jwtbundle import JwtBundleSet
    from spiffe_bridge.jwtsvid import JwtSvid
    from spiffe_bridge.x509context import X509Context

__all__ = [
    "X509_FORMATS",
    "FederatedLayout",
    "FormatError",
    "JwtOptions",
    "X509Options",
    "format_options",
    "formats_taking",
    "render_jwt",
    "render_x509",
    "select_svid",
]

# The one list of X.509 formats: name -> module with ``render(ctx, options) -> list[FileSpec]`` and
# ``OPTIONS``, the X509Options fields it reads besides COMMON_OPTIONS.
_X509_MODULES: dict[str, str] = {
    "pem": "spiffe_bridge.formats.pem",
    "combined": "spiffe_bridge.formats.combined",
    "envoy-sds": "spiffe_bridge.formats.envoy_sds",
    "pkcs12": "spiffe_bridge.formats.pkcs12",
    "der": "spiffe_bridge.formats.der",
    "linkerd": "spiffe_bridge.formats.linkerd",
    "spiffe-fs": "spiffe_bridge.formats.spiffe_fs",
    "bundle-map": "spiffe_bridge.formats.bundle_map",
}

#: Names accepted by :func:`render_x509`.
X509_FORMATS: tuple[str, ...] = tuple(_X509_MODULES)


def _module(format_name: str) -> Any:
    module = _X509_MODULES.get(format_name)
    if module is None:
        raise FormatError(f"unknown X.509 format {format_name!r}; choose one of {', '.join(X509_FORMATS)}")
    return importlib.import_module(module)


def format_options(format_name: str) -> frozenset[str]:
    """The X509Options fields ``format_name`` reads (FormatError for an unknown format)."""
    own: frozenset[str] = _module(format_name).OPTIONS
    return COMMON_OPTIONS | own


def formats_taking(option: str) -> tuple[str, ...]:
    """The formats that read ``option``, in registry order (for "which format takes it" messages)."""
    return tuple(name for name in X509_FORMATS if option in format_options(name))


def render_x509(format_name: str, ctx: X509Context, options: X509Options | None = None) -> list[FileSpec]:
    """Render ``ctx`` in ``format_name``; FormatError for an unknown format or unusable options."""
    render: Callable[[X509Context, X509Options], list[FileSpec]] = _module(format_name).render
    return render(ctx, options or X509Options())


def render_jwt(
    svids: Sequence[tuple[JwtSvid, str]], bundles: JwtBundleSet | None, options: JwtOptions | None = None
) -> list[FileSpec]:
    """JWT-SVID token files (``(svid, file name)`` pairs) and, when given, the JWT bundle files."""
    from spiffe_bridge.formats import jwt

    return jwt.render(svids, bundles, options or JwtOptions())
