"""Open Inference Protocol (KServe V2 / Triton) requests and answers <-> the data plane's own types.

One ``V2Codec`` per model (``codec_for``) holds what can be worked out once: the model's input datatypes,
output datatypes and metadata. Per request it only walks the JSON document and builds numpy arrays; tensor
data is handled by ``v2_json`` (JSON ``data``) and ``v2_binary`` (the binary tensor data extension).

A declared input datatype must be the model's, or safely castable to it: integers to a float type wide enough
to hold them exactly (INT16 -> FP32, INT64 -> FP64), any float to any float, a narrower integer to a wider one.
Everything else (INT64 for an FP32 input, FP64 for an integer input, BYTES for numbers) is a 400.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import jsonutil
from ...context import JsonLimits
from ...datatypes import DATATYPES, datatype_of
from ...errors import InferenceError, InvalidInput, MalformedRequest
from ...inference import InferenceRequest, InferenceResponse
from ...matching import output_aliases
from ...models.base import Model
from ...security import json_limits
from ...signature import Signature
from ..common import package_version
from . import binary as v2_binary
from . import document as v2_document
from . import json as v2_json

EXTENSIONS = ("binary_tensor_data", "statistics")
_UNSUPPORTED_TYPES = {"BF16": "datatype BF16 is not supported (numpy has no bfloat16); send FP32"}
_MAX_ELEMENTS = 2**48
_NOT_SUPPORTED_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def _castable(given: str, expected: str) -> bool:
    if given == expected:
        return True
    if "BYTES" in (given, expected) or "BOOL" in (given, expected):
        return False
    src, dst = DATATYPES[given], DATATYPES[expected]
    if src.kind == "f":
        return dst.kind == "f"
    return bool(np.can_cast(src, dst, "safe"))


#: (declared datatype, model datatype) pairs a request may use
SAFE_CASTS = frozenset((g, e) for g in DATATYPES for e in DATATYPES if _castable(g, e))


def server_metadata() -> dict[str, Any]:
    return {"name": "modelapi", "version": package_version(), "extensions": list(EXTENSIONS)}


@dataclass(frozen=True)
class OutputFormat:
    """Which outputs go in binary: per-output ``binary_data``, else the request's ``binary_data_output``."""

    binary_default: bool = False
    binary: dict[str, bool] = field(default_factory=dict)

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def parse(
    body: bytes, header_length: int | None = None, limits: JsonLimits | None = None
) -> tuple[Any, v2_binary.BinaryReader | None]:
    """An infer request's JSON (and the reader of its binary part, with the binary extension), before any version
    is asked: a body that is not JSON is the request's fault on every protocol, named by no version."""
    if header_length is not None:
        header, rest = v2_binary.split(body, header_length)
        return jsonutil.loads(header, limits), v2_binary.BinaryReader(rest)
    if not body or type(body) is not bytes:
        return jsonutil.loads(body, limits), None  # an empty body's error; a str or memoryview of a caller's
    if limits is not None:
        openings = json_limits.check(body, max_depth=limits.max_depth, max_elements=limits.max_elements)
    else:
        openings = json_limits.openings(body)
    # numeric data straight into numpy; anything else, and every fault, orjson's (the limits checked above)
    doc = v2_document.loads(body, openings)
    return (jsonutil.loads(body) if doc is None else doc), None


class V2Codec:
    def __init__(self, model: Model) -> None:
        self.signature: Signature = model.signature
        self.input_types = {s.name: s.datatype for s in self.signature.inputs}
        self.output_types = {s.name: s.datatype for s in self.signature.outputs}
        for alias, name in output_aliases(self.signature).items():  # MLServer's output names (matching.py)
            self.output_types[alias] = self.output_types[name]
        self.metadata: dict[str, Any] = {
            "name": model.name,
            "versions": [model.version],
            "platform": model.platform,
            "inputs": [s.to_dict() for s in self.signature.inputs],
            "outputs": [s.to_dict() for s in self.signature.outputs],
        }
        self.metadata_json = jsonutil.dumps(self.metadata)

    # requests --------------------------------------------------------------------------------------------
    def decode(
        self, body: bytes, header_length: int | None = None, limits: JsonLimits | None = None
    ) -> tuple[InferenceRequest, OutputFormat]:
        """Parse an infer request. ``header_length``: the binary extension's JSON header length, if any;
        ``limits``: the JSON limits of the call (``CallContext.json``), none for a trusted caller."""
        return self.decode_parsed(*parse(body, header_length, limits))

    def decode_parsed(
        self, doc: Any, reader: v2_binary.BinaryReader | None = None
    ) -> tuple[InferenceRequest, OutputFormat]:
        """An infer request that ``parse`` read: its tensors checked against this model's signature."""
        if not isinstance(doc, dict):
            raise MalformedRequest("the request body must be a JSON object with 'inputs'")
        rid = doc.get("id")
        if rid is not None and not isinstance(rid, str):
            raise MalformedRequest("id: must be a string")
        parameters = _object(doc.get("parameters"), "parameters")
        items = doc.get("inputs")
        if not isinstance(items, list) or not items:
            raise MalformedRequest("inputs: must be a non-empty array of {name, shape, datatype, data} objects")
        inputs: dict[str, np.ndarray] = {}
        for index, item in enumerate(items):
            name, arr = self._decode_input(index, item, reader)
            if name in inputs:
                raise MalformedRequest(f"inputs[{index}].name: input '{name}' is given twice")
            inputs[name] = arr
        if reader is not None:
            reader.finish()
        outputs, fmt = _decode_outputs(doc.get("outputs"), parameters)
        return InferenceRequest(inputs, id=rid, outputs=outputs, parameters=parameters), fmt

    def _decode_input(self, index: int, item: Any, reader: v2_binary.BinaryReader | None) -> tuple[str, np.ndarray]:
        if not isinstance(item, dict):
            raise MalformedRequest(f"inputs[{index}]: must be an object with name, shape, datatype and data")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedRequest(f"inputs[{index}].name: missing, or not a non-empty string")
        where = f"input '{name}'"
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise MalformedRequest(f"{where}: 'datatype' is missing or not a string")
        if datatype not in DATATYPES:
            reason = _UNSUPPORTED_TYPES.get(datatype, f"'{datatype[:40]}' is not a datatype")
            raise InvalidInput(f"{where}: {reason}; expected one of {', '.join(DATATYPES)}")
        expected = self.input_types.get(name)
        if expected is not None and (datatype, expected) not in SAFE_CASTS:
            raise InvalidInput(f"{where}: datatype {datatype} given, model expects {expected}")
        shape = _shape(item.get("shape"), where)
        params = item.get("parameters")
        if params is None:  # the common case: nothing to check
            size = None
        else:
            params = _object(params, f"{where}: parameters")
            _refuse_shared_memory(params, where)
            size = params.get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise MalformedRequest(f"{where}: 'data' is missing (or give parameters.binary_data_size)")
            return name, v2_json.decode_tensor(item["data"], datatype, shape, where)
        if type(size) is not int or size < 0:
            raise MalformedRequest(f"{where}: parameters.binary_data_size must be a non-negative integer")
        if "data" in item:
            raise MalformedRequest(f"{where}: give either 'data' or parameters.binary_data_size, not both")
        if reader is None:
            raise MalformedRequest(
                f"{where}: parameters.binary_data_size needs the {v2_binary.HEADER_LENGTH} header "
                "and the binary data after the JSON"
            )
        return name, v2_binary.decode_tensor(reader.take(size, where), datatype, shape, where)

    # answers ---------------------------------------------------------------------------------------------
    def encode(self, response: InferenceResponse, fmt: OutputFormat | None = None) -> tuple[bytes, int | None]:
        """The answer body, and the JSON header's length when binary outputs follow it (else ``None``)."""
        fmt = fmt or OutputFormat()
        outputs: list[dict[str, Any]] = []
        chunks: list[bytes | memoryview] = []
        for name, value in response.outputs.items():
            datatype = self.output_types.get(name) or datatype_of(value.dtype)
            arr = self._output_array(name, value, datatype)
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
            if fmt.is_binary(name):
                raw = v2_binary.encode_tensor(arr, datatype)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = v2_json.encode_tensor(arr, datatype)
            outputs.append(entry)
        doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
        if response.id is not None:
            doc["id"] = response.id
        if response.parameters:
            doc["parameters"] = response.parameters
        doc["outputs"] = outputs
        header = jsonutil.dumps(doc)
        if not chunks:
            return header, None
        return b"".join([header, *chunks]), len(header)

    def _output_array(self, name: str, value: np.ndarray, datatype: str) -> np.ndarray:
        want = DATATYPES[datatype]
        if (dtype := value.dtype) is want or datatype == "BYTES" or dtype == want:
            return value
        try:
            return value.astype(DATATYPES[datatype])
        except (TypeError, ValueError):
            raise InferenceError(f"model output '{name}' cannot be represented as {datatype}") from None


_PLAIN = OutputFormat(False)
_BINARY = OutputFormat(True)


def _decode_outputs(value: Any, parameters: dict[str, Any]) -> tuple[list[str] | None, OutputFormat]:
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise MalformedRequest("parameters.binary_data_output: must be true or false")
    if value is None:  # no outputs named: one of two formats, made once (nothing changes a format)
        return None, _BINARY if default else _PLAIN
    if not isinstance(value, list):
        raise MalformedRequest("outputs: must be an array of {name, parameters} objects")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise MalformedRequest(f"outputs[{index}]: must be an object with a name")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedRequest(f"outputs[{index}].name: missing, or not a non-empty string")
        if name in names:
            raise MalformedRequest(f"outputs[{index}].name: output '{name}' is requested twice")
        names.append(name)
        params = _object(item.get("parameters"), f"output '{name}': parameters")
        _refuse_shared_memory(params, f"output '{name}'")
        if "classification" in params:
            raise InvalidInput(f"output '{name}': the classification extension is not supported")
        flag = params.get("binary_data")
        if flag is not None:
            if not isinstance(flag, bool):
                raise MalformedRequest(f"output '{name}': parameters.binary_data must be true or false")
            binary[name] = flag
    return (names or None), OutputFormat(default, binary)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRequest(f"{where}: must be an object")
    return value


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list):
        raise MalformedRequest(f"{where}: 'shape' is missing or not an array of integers")
    if len(value) > 32:
        raise MalformedRequest(f"{where}: 'shape' has {len(value)} dimensions; at most 32 are supported")
    for dim in value:
        if type(dim) is not int:
            raise MalformedRequest(f"{where}: 'shape' must hold integers, got {_json_kind(dim)}")
        if dim < 0:
            raise MalformedRequest(f"{where}: 'shape' {value} has a negative size; give the actual sizes")
    # numpy cannot even make an empty array that big (a 0 counts as 1 here: the product of the others is the size)
    if (math.prod(value) if 0 not in value else math.prod(dim or 1 for dim in value)) > _MAX_ELEMENTS:
        raise MalformedRequest(f"{where}: 'shape' {value} is too large")
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _refuse_shared_memory(params: dict[str, Any], where: str) -> None:
    for key in _NOT_SUPPORTED_PARAMS:
        if key in params:
            raise InvalidInput(f"{where}: parameters.{key}: the shared-memory extension is not supported")


_CODECS: weakref.WeakKeyDictionary[Model, V2Codec] = weakref.WeakKeyDictionary()


def codec_for(model: Model) -> V2Codec:
    """The codec for ``model``, built once (and again if the model's signature object changes, e.g. on load)."""
    try:
        codec = _CODECS.get(model)
    except TypeError:  # a model class that is unhashable or not weak-referenceable: no caching
        return V2Codec(model)
    if codec is None or codec.signature is not model.signature:
        codec = _CODECS[model] = V2Codec(model)
    return codec
