"""The checked-in stubs match proto/*.proto, and the wire contracts are exact."""

from __future__ import annotations

import hashlib
import importlib.util
import pathlib
import re

from spiffe_bridge._proto import brokerapi_pb2 as bpb
from spiffe_bridge._proto import workload_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_stubs_do_not_drift(tmp_path: pathlib.Path) -> None:
    gen = _load_generator()
    gen.generate(tmp_path)  # type: ignore[attr-defined]
    names = [name for stem in ("workload", "brokerapi") for name in gen.outputs(stem)]  # type: ignore[attr-defined]
    assert "brokerapi_pb2_grpc.py" in names
    for name in names:
        fresh = (tmp_path / name).read_text()
        current = (ROOT / "spiffe_bridge" / "_proto" / name).read_text()
        assert fresh == current, f"{name} drifted from proto/: run scripts/gen_proto.py"


def test_vendored_broker_proto_is_unchanged() -> None:
    recorded = re.search(
        r"`brokerapi.proto` sha256: `([0-9a-f]{64})`", (ROOT / "proto" / "README.md").read_text()
    )
    assert recorded is not None
    assert hashlib.sha256((ROOT / "proto" / "brokerapi.proto").read_bytes()).hexdigest() == recorded[1]


def test_broker_service_methods_and_fields() -> None:
    service = bpb.DESCRIPTOR.services_by_name["API"]
    assert service.full_name == "spiffe.broker.API"
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert methods == {
        "SubscribeToX509SVID": ("SubscribeToX509SVIDRequest", "SubscribeToX509SVIDResponse", True),
        "SubscribeToX509Bundles": ("SubscribeToX509BundlesRequest", "SubscribeToX509BundlesResponse", True),
        "FetchJWTSVID": ("FetchJWTSVIDRequest", "FetchJWTSVIDResponse", False),
        "SubscribeToJWTBundles": ("SubscribeToJWTBundlesRequest", "SubscribeToJWTBundlesResponse", True),
    }

    def fields(msg: type) -> dict[str, int]:
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert fields(bpb.WorkloadPIDReference) == {"pid": 1}
    assert fields(bpb.KubernetesObjectReference) == {"type": 1, "key": 2, "uid": 3}
    assert fields(bpb.SubscribeToX509SVIDResponse) == {"svids": 1, "crl": 2, "federated_bundles": 3}
    assert fields(bpb.X509SVID) == fields(pb.X509SVID)
    assert fields(bpb.FetchJWTSVIDRequest) == {"reference": 1, "audience": 2, "spiffe_id": 3}


def test_broker_reference_packs_with_the_standard_type_url() -> None:
    ref = bpb.WorkloadReference()
    ref.reference.Pack(bpb.WorkloadPIDReference(pid=1234))
    assert ref.reference.type_url == "type.googleapis.com/spiffe.broker.WorkloadPIDReference"
    back = bpb.WorkloadPIDReference()
    assert bpb.WorkloadReference.FromString(ref.SerializeToString()).reference.Unpack(back)
    assert back.pid == 1234


def test_service_and_methods_have_no_package() -> None:
    service = pb.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    assert service.full_name == "SpiffeWorkloadAPI"
    assert pb.DESCRIPTOR.package == ""
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert methods == {
        "FetchX509SVID": ("X509SVIDRequest", "X509SVIDResponse", True),
        "FetchX509Bundles": ("X509BundlesRequest", "X509BundlesResponse", True),
        "FetchJWTSVID": ("JWTSVIDRequest", "JWTSVIDResponse", False),
        "FetchJWTBundles": ("JWTBundlesRequest", "JWTBundlesResponse", True),
        "ValidateJWTSVID": ("ValidateJWTSVIDRequest", "ValidateJWTSVIDResponse", False),
    }


def test_field_numbers() -> None:
    def fields(msg: type) -> dict[str, int]:
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert fields(pb.X509SVIDResponse) == {"svids": 1, "crl": 2, "federated_bundles": 3}
    assert fields(pb.X509SVID) == {"spiffe_id": 1, "x509_svid": 2, "x509_svid_key": 3, "bundle": 4, "hint": 5}
    assert fields(pb.X509BundlesResponse) == {"crl": 1, "bundles": 2}
    assert fields(pb.JWTSVIDRequest) == {"audience": 1, "spiffe_id": 2}
    assert fields(pb.JWTSVIDResponse) == {"svids": 1}
    assert fields(pb.JWTSVID) == {"spiffe_id": 1, "svid": 2, "hint": 3}
    assert fields(pb.JWTBundlesResponse) == {"bundles": 1}
    assert fields(pb.ValidateJWTSVIDRequest) == {"audience": 1, "svid": 2}
    assert fields(pb.ValidateJWTSVIDResponse) == {"spiffe_id": 1, "claims": 2}


def test_coexists_with_pyspiffe_stubs() -> None:
    from spiffe._proto import workload_pb2 as theirs

    ours = pb.X509SVIDResponse(svids=[pb.X509SVID(spiffe_id="spiffe://example.org/a", hint="h")])
    decoded = theirs.X509SVIDResponse.FromString(ours.SerializeToString())
    assert decoded.svids[0].spiffe_id == "spiffe://example.org/a"
