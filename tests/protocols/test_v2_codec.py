"""The Open Inference Protocol codec on its own: JSON and binary tensors in, answers out, and every 400."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from modelapi.datatypes import DATATYPES
from modelapi.errors import BadRequest, InferenceError, InvalidInput, MalformedRequest
from modelapi.inference import InferenceResponse
from modelapi.protocols.v2 import codec as v2
from modelapi.protocols.v2 import json as v2_json
from modelapi.protocols.v2.codec import OutputFormat, V2Codec, codec_for
from toymodels import ECHO_TYPES, Echo, IrisClassifier, Regressor

ECHO = V2Codec(Echo())
REGRESSOR = V2Codec(Regressor())

#: three JSON values per datatype, chosen near each type's limits
VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, True],
    "UINT8": [0, 1, 255],
    "UINT16": [0, 7, 65535],
    "UINT32": [0, 7, 2**32 - 1],
    "UINT64": [0, 7, 2**64 - 1],
    "INT8": [-128, 0, 127],
    "INT16": [-(2**15), 0, 2**15 - 1],
    "INT32": [-(2**31), 0, 2**31 - 1],
    "INT64": [-(2**63), 0, 2**63 - 1],
    "FP16": [-1.5, 0.0, 65504.0],
    "FP32": [-1.5, 0.25, 2.0**127],
    "FP64": [-1.5, 0.1, 1.7e308],
    "BYTES": ["a", "", "naïve ☃"],
}


def doc(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def raw_bytes(datatype: str, values: list[Any]) -> bytes:
    """What a client puts in the binary part for ``values`` (written here independently of the codec)."""
    if datatype == "BYTES":
        out = b""
        for v in values:
            b = v.encode() if isinstance(v, str) else v
            out += struct.pack("<I", len(b)) + b
        return out
    return np.array(values, dtype=DATATYPES[datatype].newbyteorder("<")).tobytes()


def binary_request(items: Sequence[tuple[dict[str, Any], bytes | None]], **extra: Any) -> tuple[bytes, int]:
    """A binary-extension body: items are (input JSON, its raw bytes or None for JSON data)."""
    inputs = []
    blobs = b""
    for item, blob in items:
        if blob is not None:
            item = {**item, "parameters": {"binary_data_size": len(blob)}}
            blobs += blob
        inputs.append(item)
    header = orjson.dumps({"inputs": inputs, **extra})
    return header + blobs, len(header)


def split_answer(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        return orjson.loads(body), b""
    return orjson.loads(body[:header_length]), body[header_length:]


def answer(outputs: dict[str, np.ndarray], rid: str | None = None) -> InferenceResponse:
    return InferenceResponse("echo", "1", outputs, id=rid)


# round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ECHO_TYPES)
def test_every_datatype_round_trips_as_json(datatype: str) -> None:
    name = datatype.lower()
    req, fmt = ECHO.decode(doc(tensor(name, datatype, [3], VALUES[datatype])))
    arr = req.inputs[name]
    assert arr.dtype == DATATYPES[datatype] and arr.shape == (3,)
    assert arr.tolist() == VALUES[datatype]

    body, header_length = ECHO.encode(answer({f"{name}_out": arr}), fmt)
    assert header_length is None
    out = orjson.loads(body)["outputs"][0]
    assert out == {"name": f"{name}_out", "datatype": datatype, "shape": [3], "data": out["data"]}
    if datatype in ("FP16", "FP32"):  # written as the shortest text that reads back as the same float16/32
        assert np.array_equal(np.array(out["data"], dtype=DATATYPES[datatype]), arr)
    else:
        assert out["data"] == VALUES[datatype]


@pytest.mark.parametrize("datatype", ECHO_TYPES)
def test_every_datatype_round_trips_in_binary(datatype: str) -> None:
    name = datatype.lower()
    blob = raw_bytes(datatype, VALUES[datatype])
    body, n = binary_request([({"name": name, "datatype": datatype, "shape": [3]}, blob)])
    req = ECHO.decode(body, n)[0]
    arr = req.inputs[name]
    assert arr.shape == (3,) and arr.tolist() == VALUES[datatype]
    if datatype != "BYTES":
        assert arr.dtype == DATATYPES[datatype]

    out_body, header_length = ECHO.encode(answer({f"{name}_out": arr}), OutputFormat(binary_default=True))
    assert header_length is not None
    header, rest = split_answer(out_body, header_length)
    out = header["outputs"][0]
    assert out == {
        "name": f"{name}_out",
        "datatype": datatype,
        "shape": [3],
        "parameters": {"binary_data_size": len(blob)},
    }
    assert rest == blob


def test_binary_numeric_inputs_are_views_of_the_body() -> None:
    blob = np.arange(6, dtype="<f4").tobytes()
    body, n = binary_request([({"name": "matrix", "datatype": "FP32", "shape": [1, 2, 3]}, blob)])
    arr = ECHO.decode(body, n)[0].inputs["matrix"]
    assert arr.shape == (1, 2, 3) and arr.tolist() == [[[0, 1, 2], [3, 4, 5]]]
    assert not arr.flags.owndata and not arr.flags.writeable  # np.frombuffer on the body: no copy


def test_binary_and_json_inputs_mix_in_input_order() -> None:
    body, n = binary_request(
        [
            ({"name": "a", "datatype": "FP64", "shape": [2]}, raw_bytes("FP64", [1.0, 2.0])),
            (tensor("b", "FP64", [2], [3.0, 4.0]), None),
            ({"name": "c", "datatype": "BYTES", "shape": [2]}, raw_bytes("BYTES", ["x", "yz"])),
            ({"name": "d", "datatype": "INT8", "shape": [2]}, raw_bytes("INT8", [-1, 1])),
        ]
    )
    inputs = REGRESSOR.decode(body, n)[0].inputs
    assert inputs["a"].tolist() == [1.0, 2.0] and inputs["b"].tolist() == [3.0, 4.0]
    assert inputs["c"].tolist() == ["x", "yz"] and inputs["d"].tolist() == [-1, 1]


def test_binary_bytes_that_are_not_utf8_stay_bytes() -> None:
    body, n = binary_request(
        [({"name": "bytes", "datatype": "BYTES", "shape": [2]}, raw_bytes("BYTES", [b"\xff", b"ok"]))]
    )
    assert ECHO.decode(body, n)[0].inputs["bytes"].tolist() == [b"\xff", b"ok"]


def test_flat_and_nested_data_give_the_same_array() -> None:
    flat = ECHO.decode(doc(tensor("matrix", "FP32", [2, 2, 3], list(range(12)))))[0].inputs["matrix"]
    nested = [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    deep = ECHO.decode(doc(tensor("matrix", "FP32", [2, 2, 3], nested)))[0].inputs["matrix"]
    assert flat.shape == deep.shape == (2, 2, 3)
    assert np.array_equal(flat, deep) and flat.tolist() == nested


def test_empty_dimensions_are_fine_for_the_codec() -> None:
    arr = ECHO.decode(doc(tensor("matrix", "FP32", [0, 2, 3], [])))[0].inputs["matrix"]
    assert arr.shape == (0, 2, 3)


def test_null_in_a_float_tensor_reads_as_nan() -> None:
    arr = ECHO.decode(doc(tensor("fp64", "FP64", [3], [1.0, None, 2])))[0].inputs["fp64"]
    assert arr.dtype == np.float64 and math.isnan(arr[1]) and arr[2] == 2.0


def test_integral_floats_are_accepted_as_integers() -> None:
    arr = ECHO.decode(doc(tensor("int32", "INT32", [2], [1.0, 2])))[0].inputs["int32"]
    assert arr.dtype == np.int32 and arr.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("given", "model_input"),
    [
        ("INT32", "fp64"),
        ("INT64", "fp64"),
        ("INT16", "fp32"),
        ("FP32", "fp64"),
        ("FP64", "fp32"),
        ("FP16", "fp64"),
        ("INT8", "int64"),
        ("UINT8", "int16"),
        ("UINT32", "uint64"),
    ],
)
def test_safe_widening_is_allowed(given: str, model_input: str) -> None:
    arr = ECHO.decode(doc(tensor(model_input, given, [2], [1, 2])))[0].inputs[model_input]
    assert arr.dtype == DATATYPES[given] and arr.tolist() == [1, 2]  # the model's dtype comes from validate()


@pytest.mark.parametrize(
    ("given", "model_input", "value"),
    [
        ("INT64", "fp32", 1),
        ("INT32", "fp32", 1),
        ("FP64", "int64", 1.0),
        ("BYTES", "fp64", "1"),
        ("FP64", "bytes", 1.0),
        ("BOOL", "int8", True),
        ("INT8", "bool", 1),
        ("UINT64", "int64", 1),
        ("INT8", "uint8", 1),
        ("INT64", "int32", 1),
    ],
)
def test_unsafe_declared_datatypes_are_refused(given: str, model_input: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as err:
        ECHO.decode(doc(tensor(model_input, given, [1], [value])))
    expected = model_input.upper()
    assert err.value.detail == f"input '{model_input}': datatype {given} given, model expects {expected}"


def test_inputs_the_model_does_not_have_are_left_to_the_signature() -> None:
    req = ECHO.decode(doc(tensor("extra", "INT64", [1], [1])))[0]
    assert req.inputs["extra"].tolist() == [1]


# every mismatch between data, datatype and shape is a 400 -----------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("INT32", [1, 1.5], ["INT32 needs integers", "1.5", "element 1"]),
        ("INT64", [True], ["INT64 needs integers", "boolean", "element 0"]),
        ("INT64", [None], ["INT64 needs integers", "null"]),
        ("INT64", ["1"], ["INT64 needs integers", "string '1'"]),
        ("FP32", ["abc"], ["FP32 needs numbers", "string 'abc'"]),
        ("FP64", [1.0, False], ["FP64 needs numbers", "boolean", "element 1"]),
        ("FP64", [{"x": 1}], ["FP64 needs numbers", "object"]),
        ("BOOL", [1], ["BOOL needs true/false", "number 1"]),
        ("BOOL", [None], ["BOOL needs true/false", "null"]),
        ("BYTES", [1], ["BYTES needs strings", "number 1"]),
        ("BYTES", [None], ["BYTES needs strings", "null"]),
        ("INT8", [1, 300], ["300", "element 1", "out of range for INT8"]),
        ("INT8", [-129], ["-129", "out of range for INT8"]),
        ("UINT8", [-1], ["-1", "out of range for UINT8"]),
        ("UINT64", [-1], ["out of range for UINT64"]),
        ("INT64", [2**63], ["out of range for INT64"]),
        ("INT64", [1.8446744073709552e19], ["out of range for INT64"]),
        ("FP16", [1.0, 70000.0], ["70000.0", "element 1", "out of range for FP16"]),
        ("FP32", [1e300], ["out of range for FP32"]),
        ("FP64", [2**1100], ["out of range for FP64"]),
        ("FP32", [2**1100, None], ["out of range for FP32"]),
        ("INT32", [float("inf")], ["INT32 needs integers", "inf"]),
    ],
)
def test_data_that_the_datatype_does_not_describe_is_a_400(datatype: str, data: list[Any], words: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        v2_json.decode_tensor(data, datatype, [len(data)], "input 'x'")
    assert err.value.detail.startswith("input 'x': ")
    for word in words:
        assert word in err.value.detail


@pytest.mark.parametrize(
    ("shape", "data", "words"),
    [
        ([3], [1, 2], ["shape [3] has 3 elements", "'data' has 2"]),
        ([2, 3], [1, 2, 3, 4, 5], ["shape [2, 3] has 6 elements", "has 5"]),
        ([1], [], ["shape [1] has 1 elements", "has 0"]),
        ([2, 3], [[1, 2], [3, 4], [5, 6]], ["nested 'data' does not match shape [2, 3]"]),
        ([2, 2], [[1, 2], [3]], ["nested 'data' does not match shape [2, 2]"]),
        ([2, 2], [[1, 2], 3], ["nested 'data' does not match shape [2, 2]"]),
        ([2], [[1], [2]], ["element 0 is an array", "nested exactly to shape [2]"]),
        ([2], [1, [2]], ["element 1 is an array", "nested exactly to shape [2]"]),
        ([4], [[1, 2], [3, 4]], ["nested 'data' does not match shape [4]"]),
    ],
)
def test_shape_and_element_count_must_agree(shape: list[int], data: list[Any], words: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        ECHO.decode(doc(tensor("fp64", "FP64", shape, data)))
    assert err.value.detail.startswith("input 'fp64': ")
    for word in words:
        assert word in err.value.detail


def test_bf16_is_a_clear_400() -> None:
    with pytest.raises(InvalidInput, match="input 'fp32': datatype BF16 is not supported"):
        ECHO.decode(doc(tensor("fp32", "BF16", [1], [1.0])))


def test_unknown_datatype_is_a_400() -> None:
    with pytest.raises(InvalidInput, match="input 'fp32': 'FLOAT' is not a datatype; expected one of BOOL"):
        ECHO.decode(doc(tensor("fp32", "FLOAT", [1], [1.0])))


# malformed structure: 400 naming the field, never a 500 ---------------------------------------------------

GOOD = tensor("a", "FP64", [1], [1.0])
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "JSON object with 'inputs'"),
    (b'"inputs"', "JSON object with 'inputs'"),
    (b"{}", "inputs: must be a non-empty array"),
    (orjson.dumps({"inputs": {"a": 1}}), "inputs: must be a non-empty array"),
    (orjson.dumps({"inputs": []}), "inputs: must be a non-empty array"),
    (orjson.dumps({"inputs": [1]}), "inputs[0]: must be an object"),
    (doc(GOOD, {"datatype": "FP64", "shape": [1], "data": [1]}), "inputs[1].name: missing"),
    (
        doc({"name": 5, "datatype": "FP64", "shape": [1], "data": [1]}),
        "inputs[0].name: missing, or not a non-empty string",
    ),
    (doc({"name": "", "datatype": "FP64", "shape": [1], "data": [1]}), "inputs[0].name"),
    (doc({"name": "a", "shape": [1], "data": [1]}), "input 'a': 'datatype' is missing"),
    (doc({"name": "a", "datatype": 64, "shape": [1], "data": [1]}), "input 'a': 'datatype' is missing or not a string"),
    (doc({"name": "a", "datatype": "FP64", "data": [1]}), "input 'a': 'shape' is missing"),
    (doc({"name": "a", "datatype": "FP64", "shape": 1, "data": [1]}), "input 'a': 'shape' is missing or not an array"),
    (
        doc({"name": "a", "datatype": "FP64", "shape": ["1"], "data": [1]}),
        "input 'a': 'shape' must hold integers, got a string",
    ),
    (doc({"name": "a", "datatype": "FP64", "shape": [1.0], "data": [1]}), "input 'a': 'shape' must hold integers"),
    (
        doc({"name": "a", "datatype": "FP64", "shape": [True], "data": [1]}),
        "input 'a': 'shape' must hold integers, got a boolean",
    ),
    (doc({"name": "a", "datatype": "FP64", "shape": [-1], "data": [1]}), "input 'a': 'shape' [-1] has a negative size"),
    (doc({"name": "a", "datatype": "FP64", "shape": [1] * 33, "data": [1]}), "input 'a': 'shape' has 33 dimensions"),
    (
        doc({"name": "a", "datatype": "FP64", "shape": [0, 2**63 + 5], "data": []}),
        "input 'a': 'shape' [0, 9223372036854775813] is too large",
    ),
    (doc({"name": "a", "datatype": "FP16", "shape": [2**62, 0], "data": []}), "is too large"),
    (doc({"name": "a", "datatype": "FP16", "shape": [2**20, 2**20, 2**20, 0], "data": []}), "is too large"),
    (doc({"name": "a", "datatype": "FP64", "shape": [1]}), "input 'a': 'data' is missing"),
    (doc({"name": "a", "datatype": "FP64", "shape": [1], "data": 1.0}), "input 'a': 'data' must be an array"),
    (doc({"name": "a", "datatype": "FP64", "shape": [1], "data": "1"}), "input 'a': 'data' must be an array"),
    (doc({**GOOD, "parameters": []}), "input 'a': parameters: must be an object"),
    (
        doc({**GOOD, "parameters": {"binary_data_size": -1}}),
        "input 'a': parameters.binary_data_size must be a non-negative",
    ),
    (doc({**GOOD, "parameters": {"binary_data_size": "8"}}), "input 'a': parameters.binary_data_size must be"),
    (
        doc({**GOOD, "parameters": {"binary_data_size": 8}}),
        "input 'a': give either 'data' or parameters.binary_data_size",
    ),
    (
        doc({"name": "a", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}),
        "input 'a': parameters.binary_data_size needs the Inference-Header-Content-Length header",
    ),
    (doc({**GOOD, "parameters": {"shared_memory_region": "r"}}), "input 'a': parameters.shared_memory_region"),
    (doc(GOOD, GOOD), "inputs[1].name: input 'a' is given twice"),
    (doc(GOOD, id=5), "id: must be a string"),
    (doc(GOOD, parameters=[1]), "parameters: must be an object"),
    (doc(GOOD, parameters={"binary_data_output": "yes"}), "parameters.binary_data_output: must be true or false"),
    (doc(GOOD, outputs={"name": "prediction"}), "outputs: must be an array"),
    (doc(GOOD, outputs=["prediction"]), "outputs[0]: must be an object"),
    (doc(GOOD, outputs=[{"parameters": {}}]), "outputs[0].name: missing"),
    (doc(GOOD, outputs=[{"name": "p"}, {"name": "p"}]), "outputs[1].name: output 'p' is requested twice"),
    (doc(GOOD, outputs=[{"name": "p", "parameters": 1}]), "output 'p': parameters: must be an object"),
    (
        doc(GOOD, outputs=[{"name": "p", "parameters": {"binary_data": 1}}]),
        "output 'p': parameters.binary_data must be",
    ),
    (
        doc(GOOD, outputs=[{"name": "p", "parameters": {"classification": 2}}]),
        "output 'p': the classification extension",
    ),
    (
        b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": ' + b"[" * 2000 + b"]" * 2000 + b"}]}",
        "not valid JSON",
    ),
]


@pytest.mark.parametrize(("body", "words"), MALFORMED)
def test_malformed_requests_are_400s_naming_the_field(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as err:
        REGRESSOR.decode(body)
    assert words in err.value.detail
    assert err.value.status == 400


def test_deep_nesting_within_the_json_limit_is_still_a_400() -> None:
    deep = b"[" * 500 + b"1.0" + b"]" * 500
    body = b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": ' + deep + b"}]}"
    with pytest.raises(InvalidInput, match="input 'a': element 0 is an array"):
        REGRESSOR.decode(body)
    body = b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1, 1], "data": ' + deep + b"}]}"
    with pytest.raises(InvalidInput, match=r"input 'a': element 0 is an array; .* nested exactly to shape \[1, 1\]"):
        REGRESSOR.decode(body)


# binary extension: sizes that do not add up --------------------------------------------------------------

F64 = {"name": "a", "datatype": "FP64", "shape": [2]}
Z = {"name": "z", "shape": [2]}  # an input the model lacks: any datatype gets through to the data checks


@pytest.mark.parametrize(
    ("items", "extra", "words"),
    [
        ([(F64, raw_bytes("FP64", [1.0]))], b"", "shape [2] of FP64 needs 16 bytes but binary_data_size is 8"),
        ([(F64, raw_bytes("FP64", [1.0, 2.0, 3.0]))], b"", "needs 16 bytes but binary_data_size is 24"),
        (
            [(F64, raw_bytes("FP64", [1.0, 2.0]))],
            b"\x00",
            "1 bytes of binary data after the JSON header belong to no input",
        ),
        ([({**Z, "datatype": "BOOL"}, b"\x01\x02")], b"", "BOOL binary data must hold only the bytes 0 and 1"),
        (
            [({**Z, "datatype": "BYTES"}, raw_bytes("BYTES", ["x"]))],
            b"",
            "shape [2] has 2 elements but the binary data holds 1",
        ),
        ([({**Z, "datatype": "BYTES"}, b"\x05\x00\x00\x00ab")], b"", "declares 5 bytes but only 2 are left"),
        ([({**Z, "datatype": "BYTES"}, b"\x01\x00\x00\x00a\x01\x00")], b"", "ends inside an element's 4-byte length"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_400s(
    items: list[tuple[dict[str, Any], bytes]], extra: bytes, words: str
) -> None:
    body, n = binary_request(items)
    with pytest.raises(InvalidInput) as err:
        REGRESSOR.decode(body + extra, n)
    assert words in err.value.detail


def test_binary_data_size_past_the_end_is_a_400() -> None:
    header = orjson.dumps({"inputs": [{**F64, "parameters": {"binary_data_size": 16}}]})
    with pytest.raises(InvalidInput, match="input 'a': binary_data_size is 16 but only 8 bytes"):
        REGRESSOR.decode(header + b"\x00" * 8, len(header))


@pytest.mark.parametrize("header_length", [-1, 10_000])
def test_header_length_beyond_the_body_is_a_400(header_length: int) -> None:
    body, _ = binary_request([(F64, raw_bytes("FP64", [1.0, 2.0]))])
    with pytest.raises(MalformedRequest, match="Inference-Header-Content-Length"):
        REGRESSOR.decode(body, header_length)


def test_header_length_cutting_the_json_is_a_400() -> None:
    body, n = binary_request([(F64, raw_bytes("FP64", [1.0, 2.0]))])
    with pytest.raises(MalformedRequest, match="not valid JSON"):
        REGRESSOR.decode(body, n - 3)


# requests: id, parameters, requested outputs ------------------------------------------------------------


def test_id_parameters_and_requested_outputs_are_carried() -> None:
    body = doc(GOOD, id="req-7", parameters={"custom": {"k": [1]}}, outputs=[{"name": "b"}, {"name": "a"}])
    req, fmt = REGRESSOR.decode(body)
    assert req.id == "req-7" and req.parameters == {"custom": {"k": [1]}} and req.outputs == ["b", "a"]
    assert not fmt.is_binary("a")


def test_no_or_empty_outputs_means_all() -> None:
    assert REGRESSOR.decode(doc(GOOD))[0].outputs is None
    assert REGRESSOR.decode(doc(GOOD, outputs=[]))[0].outputs is None


def test_binary_output_choice_per_output_and_for_the_request() -> None:
    fmt = REGRESSOR.decode(doc(GOOD, outputs=[{"name": "p", "parameters": {"binary_data": True}}, {"name": "q"}]))[1]
    assert fmt.is_binary("p") and not fmt.is_binary("q")
    fmt = REGRESSOR.decode(
        doc(
            GOOD,
            parameters={"binary_data_output": True},
            outputs=[{"name": "p", "parameters": {"binary_data": False}}, {"name": "q"}],
        )
    )[1]
    assert not fmt.is_binary("p") and fmt.is_binary("q")


# answers ------------------------------------------------------------------------------------------------


def test_answer_is_flat_row_major_json_with_id() -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    body, n = ECHO.encode(answer({"matrix_out": matrix, "int8_out": np.array([1, -1], np.int8)}, rid="r1"))
    assert n is None
    assert orjson.loads(body) == {
        "model_name": "echo",
        "model_version": "1",
        "id": "r1",
        "outputs": [
            {"name": "matrix_out", "datatype": "FP32", "shape": [2, 2, 3], "data": list(range(12))},
            {"name": "int8_out", "datatype": "INT8", "shape": [2], "data": [1, -1]},
        ],
    }


def test_non_contiguous_outputs_are_written_row_major() -> None:
    m = np.arange(6, dtype=np.float32).reshape(3, 2).T.reshape(2, 1, 3)  # a transposed view
    out = orjson.loads(ECHO.encode(answer({"matrix_out": np.asfortranarray(m)}))[0])["outputs"][0]
    assert out["data"] == m.reshape(-1).tolist()
    body, n = ECHO.encode(answer({"matrix_out": np.asfortranarray(m)}), OutputFormat(True))
    assert np.frombuffer(split_answer(body, n)[1], "<f4").tolist() == m.reshape(-1).tolist()


def test_nan_and_infinity_become_null_in_json_but_survive_in_binary() -> None:
    values = np.array([1.0, np.nan, np.inf, -np.inf])
    out = orjson.loads(REGRESSOR.encode(InferenceResponse("regressor", "1", {"prediction": values}))[0])
    assert out["outputs"][0]["data"] == [1.0, None, None, None]
    body, n = REGRESSOR.encode(InferenceResponse("regressor", "1", {"prediction": values}), OutputFormat(True))
    back = np.frombuffer(split_answer(body, n)[1], "<f8")
    assert back[0] == 1.0 and np.isnan(back[1]) and back[2] == np.inf and back[3] == -np.inf


def test_mixed_binary_and_json_outputs() -> None:
    outputs = {
        "int16_out": np.array([1, 2], np.int16),
        "bytes_out": np.array(["ab", b"c"], dtype=object),
        "bool_out": np.array([True, False]),
    }
    body, n = ECHO.encode(answer(outputs), OutputFormat(False, {"int16_out": True, "bytes_out": True}))
    header, rest = split_answer(body, n)
    sizes = [o.get("parameters", {}).get("binary_data_size") for o in header["outputs"]]
    assert sizes == [4, 4 + 2 + 4 + 1, None]
    assert header["outputs"][2]["data"] == [True, False]
    assert rest == raw_bytes("INT16", [1, 2]) + raw_bytes("BYTES", ["ab", b"c"])


def test_bytes_outputs_in_json_are_strings() -> None:
    labels = np.array(["setosa", b"virginica", b"\xff"], dtype=object)
    out = orjson.loads(ECHO.encode(answer({"bytes_out": labels}))[0])["outputs"][0]
    assert out == {"name": "bytes_out", "datatype": "BYTES", "shape": [3], "data": ["setosa", "virginica", "\ufffd"]}


def test_outputs_use_the_signature_datatype() -> None:
    out = orjson.loads(ECHO.encode(answer({"fp32_out": np.array([1, 2], np.int64)}))[0])["outputs"][0]
    assert out["datatype"] == "FP32" and out["data"] == [1.0, 2.0]


def test_an_output_that_cannot_take_its_datatype_is_an_inference_error() -> None:
    with pytest.raises(InferenceError, match="model output 'fp32_out' cannot be represented as FP32"):
        ECHO.encode(answer({"fp32_out": np.array(["x"])}))


# metadata -----------------------------------------------------------------------------------------------


def test_model_metadata() -> None:
    meta = V2Codec(IrisClassifier()).metadata
    assert meta["name"] == "iris" and meta["versions"] == ["1"] and meta["platform"] == "python"
    assert meta["inputs"][0] == {"name": "sepal_length", "datatype": "FP64", "shape": [-1]}
    assert meta["outputs"][1] == {
        "name": "probabilities",
        "datatype": "FP64",
        "shape": [-1, 3],
        "labels": ["setosa", "versicolor", "virginica"],
    }
    assert orjson.loads(V2Codec(IrisClassifier()).metadata_json) == meta


def test_codec_is_built_once_per_model_and_rebuilt_when_the_signature_changes() -> None:
    model = Regressor()
    first = codec_for(model)
    assert codec_for(model) is first
    model.signature = Echo.signature
    assert codec_for(model) is not first and codec_for(model).input_types == ECHO.input_types


def test_server_metadata() -> None:
    meta = v2.server_metadata()
    assert meta["name"] == "modelapi" and "binary_tensor_data" in meta["extensions"] and meta["version"]


def test_an_output_of_a_numpy_subclass_is_written_flat() -> None:
    """``np.matrix`` stays 2-D through ``ravel``: its data still goes out as a flat list."""
    data = v2_json.encode_tensor(np.matrix([[1.0, 2.0], [3.0, 4.0]]), "FP64")
    assert orjson.loads(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)) == [1.0, 2.0, 3.0, 4.0]
