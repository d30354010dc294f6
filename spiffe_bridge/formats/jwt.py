"""JWT-SVID token files and JWT bundles (spiffe-helper's JSON shape and plain JWKS).

A token file holds the compact JWS exactly (no newline), mode 0600. The bundle file
is spiffe-helper's ``{"<trust domain>": "<std-base64 of the JWKS JSON>"}`` encoded
like Go's ``json.Marshal`` (sorted keys, no spaces); the JWKS inside is the agent's
document verbatim. ``<jwks_dir>/<trust domain>.json`` holds each JWKS as is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import spec
from spiffe_bridge.formats.options import JwtOptions
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid


def helper_bundle_json(bundles: JwtBundleSet) -> bytes:
    """spiffe-helper's JWT bundle file content."""
    doc = {td.name: base64.b64encode(b.jwks).decode("ascii") for td, b in bundles.bundles.items()}
    return json.dumps(dict(sorted(doc.items())), separators=(",", ":")).encode()


def render(
    svids: Sequence[tuple[JwtSvid, str]], bundles: JwtBundleSet | None, options: JwtOptions
) -> list[FileSpec]:
    """Token files for ``(svid, file name)`` pairs, plus bundle files when ``bundles`` is given."""
    files = [spec(name, svid.token.encode("ascii"), options.jwt_svid_file_mode) for svid, name in svids]
    if bundles is not None:
        if options.jwt_bundle_file_name:
            files.append(
                spec(options.jwt_bundle_file_name, helper_bundle_json(bundles), options.jwt_bundle_file_mode)
            )
        if options.jwks_dir:
            files += [
                spec(f"{options.jwks_dir}/{td.name}.json", bundle.jwks, options.jwt_bundle_file_mode)
                for td, bundle in sorted(bundles.bundles.items(), key=lambda item: item[0].name)
            ]
    return files
