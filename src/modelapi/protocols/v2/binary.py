"""The binary tensor data extension of the Open Inference Protocol, as Triton implements it.

A request (or answer) is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors,
one after another in the order of ``inputs`` (or ``outputs``), each declaring its byte count in
``parameters.binary_data_size``. Numbers are little-endian, row-major; BOOL is one byte per element; BYTES
elements are each a 4-byte little-endian length followed by that many bytes.

Numeric inputs are decoded without copying (``np.frombuffer`` on a slice of the body), so those arrays are
read-only. BYTES elements arrive as ``str`` when every element is valid UTF-8 (as the JSON form would give),
otherwise as ``bytes``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ...datatypes import DATATYPES
from ...errors import InvalidInput, MalformedRequest

HEADER_LENGTH = "Inference-Header-Content-Length"

#: datatype -> little-endian numpy dtype (BYTES excluded)
LITTLE_ENDIAN: dict[str, np.dtype[Any]] = {
    name: dt.newbyteorder("<") for name, dt in DATATYPES.items() if name != "BYTES"
}
_LENGTH = struct.Struct("<I")


def split(body: bytes, header_length: int) -> tuple[bytes, memoryview]:
    """The JSON header and a zero-copy view of the binary part that follows it."""
    if header_length < 0 or header_length > len(body):
        raise MalformedRequest(f"{HEADER_LENGTH}: {header_length} does not fit the request body of {len(body)} bytes")
    return body[:header_length], memoryview(body)[header_length:]


class BinaryReader:
    """Hands out consecutive slices of the binary part and checks that they add up to all of it."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.offset = 0

    def take(self, size: int, where: str) -> memoryview:
        left = len(self.buffer) - self.offset
        if size > left:
            raise InvalidInput(
                f"{where}: binary_data_size is {size} but only {left} bytes of binary data are left; "
                "the sizes must add up to the bytes after the JSON header"
            )
        chunk = self.buffer[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        left = len(self.buffer) - self.offset
        if left:
            raise InvalidInput(
                f"{left} bytes of binary data after the JSON header belong to no input; "
                "the inputs' binary_data_size values must add up to the bytes after the JSON header"
            )


def decode_tensor(buffer: memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        elements = _split_bytes(buffer, where)
        if len(elements) != count:
            raise InvalidInput(f"{where}: shape {shape} has {count} elements but the binary data holds {len(elements)}")
        arr = np.empty(count, dtype=object)
        arr[:] = _as_text(elements)
        return arr.reshape(shape)
    dtype = LITTLE_ENDIAN[datatype]
    need = count * dtype.itemsize
    if len(buffer) != need:
        raise InvalidInput(
            f"{where}: shape {shape} of {datatype} needs {need} bytes but binary_data_size is {len(buffer)}"
        )
    arr = np.frombuffer(buffer, dtype=dtype)
    if datatype == "BOOL" and count and int(arr.view(np.uint8).max()) > 1:
        raise InvalidInput(f"{where}: BOOL binary data must hold only the bytes 0 and 1")
    return arr.reshape(shape)


def _split_bytes(buffer: memoryview, where: str) -> list[bytes]:
    elements: list[bytes] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if end - offset < 4:
            raise InvalidInput(f"{where}: BYTES binary data ends inside an element's 4-byte length prefix")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if length > end - offset:
            raise InvalidInput(
                f"{where}: BYTES element {len(elements)} declares {length} bytes but only {end - offset} are left"
            )
        elements.append(bytes(buffer[offset : offset + length]))
        offset += length
    return elements


def _as_text(elements: list[bytes]) -> list[str] | list[bytes]:
    try:
        return [e.decode("utf-8") for e in elements]
    except UnicodeDecodeError:
        return elements


def encode_tensor(arr: np.ndarray, datatype: str) -> bytes | memoryview:
    """The raw little-endian bytes of an output, without copying when it is already laid out that way."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in arr.reshape(-1).tolist():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    contiguous = np.ascontiguousarray(arr, dtype=LITTLE_ENDIAN[datatype])
    return contiguous.data.cast("B")
