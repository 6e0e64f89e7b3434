"""Compile ``inference.proto`` into ``inference.binpb``, the descriptor the server loads.

Run ``python -m modelapi.grpc.proto.generate`` after editing the .proto (needs grpcio-tools, in the ``dev``
extra); ``tests/grpc/proto/test_generated.py`` fails while the committed descriptor differs from what the .proto
compiles to.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "inference.proto"
DESCRIPTOR = HERE / "inference.binpb"


def compile_descriptor() -> bytes:
    """The serialized ``FileDescriptorSet`` of ``inference.proto``, as grpcio-tools' protoc writes it."""
    from grpc_tools import protoc  # dev-only dependency

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "inference.binpb"
        code = protoc.main(["protoc", f"-I{HERE}", f"--descriptor_set_out={out}", PROTO.name])
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO.name} (exit {code})")
        return out.read_bytes()


def main() -> int:
    DESCRIPTOR.write_bytes(compile_descriptor())
    print(f"wrote {DESCRIPTOR.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
