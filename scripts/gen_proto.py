"""Regenerate spiffe_bridge/_proto from proto/workload.proto with grpcio-tools.

The generated module is post-processed in two ways, both needed to coexist with
py-spiffe in one process: the descriptors go into a private descriptor pool
(py-spiffe registers the same package-less message names in the default pool),
and the gRPC module imports its sibling relatively.

Usage: python scripts/gen_proto.py [OUTPUT_DIR]   (default: spiffe_bridge/_proto)
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "spiffe_bridge" / "_proto"

_POOL_SETUP = (
    "# spiffe-bridge: private pool, so py-spiffe's identically named messages can coexist.\n"
    "_pool = _descriptor_pool.DescriptorPool()\n"
    "_pool.AddSerializedFile(google_dot_protobuf_dot_struct__pb2.DESCRIPTOR.serialized_pb)\n"
)


def _postprocess(name: str, text: str) -> str:
    if name == "workload_pb2.py":
        anchor = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
        if anchor not in text:
            raise SystemExit("unexpected protoc output: descriptor pool anchor not found")
        text = text.replace(anchor, _POOL_SETUP + "DESCRIPTOR = _pool.AddSerializedFile(")
    elif name == "workload_pb2_grpc.py":
        text = text.replace(
            "import workload_pb2 as workload__pb2", "from . import workload_pb2 as workload__pb2"
        )
    return text


def generate(out_dir: pathlib.Path) -> None:
    """Run protoc into a scratch dir, post-process, and write the results to out_dir."""
    from grpc_tools import protoc  # imported here: only needed by developers

    with tempfile.TemporaryDirectory() as tmp:
        include = pathlib.Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(PROTO_DIR / "workload.proto"),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("workload_pb2.py", "workload_pb2.pyi", "workload_pb2_grpc.py"):
            text = (pathlib.Path(tmp) / name).read_text()
            (out_dir / name).write_text(_postprocess(name, text))
        init = out_dir / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated Workload API stubs (run scripts/gen_proto.py; never edit)."""\n')


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
