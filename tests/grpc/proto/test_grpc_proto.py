"""The committed descriptor is what ``inference.proto`` compiles to, and it speaks Triton's wire format: every
message and field the two share has the same number and type as in tritonclient's generated module."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from modelapi.grpc import proto
from modelapi.grpc.proto import generate


def test_the_committed_descriptor_is_what_the_proto_compiles_to() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) compiles the .proto")
    fresh = generate.compile_descriptor()
    committed = generate.DESCRIPTOR.read_bytes()
    assert fresh == committed, (
        "src/modelapi/grpc/proto/inference.binpb is stale: run `python -m modelapi.grpc.proto.generate`"
    )


def _fields(message: object) -> dict[str, tuple[int, int, bool]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}  # type: ignore[attr-defined]


def test_every_shared_message_has_tritons_field_numbers_and_types() -> None:
    triton = pytest.importorskip("tritonclient.grpc.service_pb2").DESCRIPTOR
    ours = proto.POOL.FindFileByName(proto.FILE)
    assert ours.package == "inference"

    def walk(ours_message: object, name: str) -> int:
        theirs = triton.pool.FindMessageTypeByName(name)
        mine = _fields(ours_message)
        assert mine.items() <= _fields(theirs).items(), name
        return 1 + sum(walk(n, f"{name}.{n.name}") for n in ours_message.nested_types)  # type: ignore[attr-defined]

    checked = sum(walk(m, m.full_name) for m in ours.message_types_by_name.values())
    assert checked > 30
    service = ours.services_by_name["GRPCInferenceService"]
    theirs = triton.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        twin = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            twin.input_type.full_name,
            twin.output_type.full_name,
        )


def test_the_specifications_core_is_all_there() -> None:
    service = proto.POOL.FindServiceByName(proto.SERVICE)
    core = {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}
    assert core <= {m.name for m in service.methods}
    request = proto.POOL.FindMessageTypeByName("inference.ModelInferRequest")
    assert request.fields_by_name["raw_input_contents"].number == 7
    assert (
        proto.POOL.FindMessageTypeByName("inference.ModelInferResponse").fields_by_name["raw_output_contents"].number
        == 6
    )
    assert isinstance(descriptor_pb2.FileDescriptorSet.FromString(generate.DESCRIPTOR.read_bytes()), object)
