"""Regenerate spiffe_bridge/_proto from proto/*.proto with grpcio-tools.

Two protos: ``workload.proto`` (the Workload API) and ``brokerapi.proto`` (the
SPIFFE Broker API, vendored unchanged from the SPIFFE standards, see
proto/README.md). Each generated module is post-processed in two ways: its
descriptors go into a private descriptor pool (py-spiffe registers the same
package-less Workload API message names in the default pool, and a future
library may register ``spiffe.broker``), and the gRPC module imports its
sibling relatively.

Usage: python scripts/gen_proto.py [OUTPUT_DIR]   (default: spiffe_bridge/_proto)
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "spiffe_bridge" / "_proto"

#: proto file -> (the well-known type module its descriptors import, why the pool is private).
PROTOS: dict[str, tuple[str, str]] = {
    "workload": ("google_dot_protobuf_dot_struct__pb2", "py-spiffe's identically named messages"),
    "brokerapi": ("google_dot_protobuf_dot_any__pb2", "other libraries' spiffe.broker stubs"),
}


def _pool_setup(stem: str) -> str:
    dependency, reason = PROTOS[stem]
    return (
        f"# spiffe-bridge: private pool, so {reason} can coexist.\n"
        "_pool = _descriptor_pool.DescriptorPool()\n"
        f"_pool.AddSerializedFile({dependency}.DESCRIPTOR.serialized_pb)\n"
    )


def _postprocess(stem: str, name: str, text: str) -> str:
    if name == f"{stem}_pb2.py":
        anchor = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
        if anchor not in text:
            raise SystemExit("unexpected protoc output: descriptor pool anchor not found")
        text = text.replace(anchor, _pool_setup(stem) + "DESCRIPTOR = _pool.AddSerializedFile(")
    elif name == f"{stem}_pb2_grpc.py":
        alias = stem.replace("_", "__") + "__pb2"
        text = text.replace(f"import {stem}_pb2 as {alias}", f"from . import {stem}_pb2 as {alias}")
    return text


def outputs(stem: str) -> tuple[str, str, str]:
    """The three files protoc writes for one proto."""
    return (f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py")


def generate(out_dir: pathlib.Path) -> None:
    """Run protoc into a scratch dir, post-process, and write the results to out_dir."""
    from grpc_tools import protoc  # imported here: only needed by developers

    for stem in PROTOS:
        with tempfile.TemporaryDirectory() as tmp:
            include = pathlib.Path(protoc.__file__).parent / "_proto"
            args = [
                "protoc",
                f"-I{PROTO_DIR}",
                f"-I{include}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO_DIR / f"{stem}.proto"),
            ]
            if protoc.main(args) != 0:
                raise SystemExit(f"protoc failed on {stem}.proto")
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in outputs(stem):
                text = (pathlib.Path(tmp) / name).read_text()
                (out_dir / name).write_text(_postprocess(stem, name, text))
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated Workload API stubs (run scripts/gen_proto.py; never edit)."""\n')


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
