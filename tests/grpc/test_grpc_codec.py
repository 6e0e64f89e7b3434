"""``ModelInferRequest`` <-> the data plane's request and answer: the same arrays the V2 REST codec builds from
the same tensors, raw contents decoded as the binary extension's, typed contents checked against the datatype."""

from __future__ import annotations

import numpy as np
import pytest

from modelapi.errors import InvalidInput, MalformedRequest
from modelapi.grpc import codec, proto
from modelapi.inference import InferenceResponse
from modelapi.protocols.v2 import binary
from modelapi.protocols.v2.codec import V2Codec
from toymodels import Echo, IrisClassifier

ECHO = V2Codec(Echo())
IRIS = V2Codec(IrisClassifier())


def request(**tensors: tuple[str, list[int], np.ndarray]) -> object:
    """A raw request: name -> (datatype, shape, values)."""
    message = proto.ModelInferRequest(model_name="echo")
    for name, (datatype, shape, values) in tensors.items():
        message.inputs.add(name=name, datatype=datatype, shape=shape)
        message.raw_input_contents.append(bytes(binary.encode_tensor(values, datatype)))
    return message


def test_raw_request_gives_the_arrays_and_a_raw_answer() -> None:
    message = request(
        fp32=("FP32", [2], np.array([1.5, 2.5], np.float32)),
        bytes=("BYTES", [2], np.array(["a", "é"], dtype=object)),
        matrix=("FP32", [1, 2, 3], np.arange(6, dtype=np.float32).reshape(1, 2, 3)),
    )
    message.id = "r1"
    message.outputs.add(name="fp32_out")
    message.parameters["priority"].int64_param = 3
    decoded, raw = codec.decode(message, ECHO)
    assert raw and decoded.id == "r1" and decoded.outputs == ["fp32_out"] and decoded.parameters == {"priority": 3}
    np.testing.assert_array_equal(decoded.inputs["fp32"], [1.5, 2.5])
    assert decoded.inputs["bytes"].tolist() == ["a", "é"]
    assert decoded.inputs["matrix"].shape == (1, 2, 3)

    answer = codec.encode(InferenceResponse("echo", "1", {"fp32_out": decoded.inputs["fp32"]}, id="r1"), ECHO, raw)
    assert (answer.model_name, answer.model_version, answer.id) == ("echo", "1", "r1")
    assert answer.outputs[0].datatype == "FP32" and list(answer.outputs[0].shape) == [2]
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [1.5, 2.5]


def test_typed_contents_in_and_out() -> None:
    message = proto.ModelInferRequest(model_name="iris")
    for name in ("sepal_length", "sepal_width", "petal_length", "petal_width"):
        message.inputs.add(name=name, datatype="FP64", shape=[2]).contents.fp64_contents.extend([1.0, 2.0])
    decoded, raw = codec.decode(message, IRIS)
    assert not raw and decoded.inputs["petal_width"].dtype == np.float64
    outputs = {"label": np.array(["setosa", "versicolor"], dtype=object), "probabilities": np.eye(2, 3)}
    answer = codec.encode(InferenceResponse("iris", "1", outputs), IRIS, raw)
    assert not answer.raw_output_contents
    assert list(answer.outputs[0].contents.bytes_contents) == [b"setosa", b"versicolor"]
    assert list(answer.outputs[1].contents.fp64_contents) == [1, 0, 0, 0, 1, 0]


def test_an_fp16_output_makes_a_typed_answer_raw() -> None:
    answer = codec.encode(InferenceResponse("echo", "1", {"fp16_out": np.array([0.5], np.float16)}), ECHO, False)
    assert np.frombuffer(answer.raw_output_contents[0], "<f2").tolist() == [0.5]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "error"),
    [
        ("INT8", "int_contents", [1, 300], "input 'x': value 300 at element 1 is out of range for INT8 (-128..127)"),
        ("UINT16", "uint_contents", [70000], "input 'x': value 70000 at element 0 is out of range for UINT16"),
        ("FP64", "fp32_contents", [1.0], "input 'x': datatype FP64 goes in contents.fp64_contents, not contents.fp32"),
        ("FP32", "fp32_contents", [1.0, 2.0, 3.0], "input 'x': shape [2] has 2 elements but contents.fp32_contents"),
        ("FP16", "fp32_contents", [1.0], "input 'x': FP16 has no typed contents field; send it in raw_input_contents"),
    ],
)
def test_typed_contents_that_do_not_fit_are_refused(datatype: str, field: str, values: list[float], error: str) -> None:
    message = proto.ModelInferRequest(model_name="echo")
    shape = [2] if "shape" in error else [len(values)]
    getattr(message.inputs.add(name="x", datatype=datatype, shape=shape).contents, field).extend(values)
    with pytest.raises(InvalidInput) as caught:
        codec.decode(message, ECHO)
    assert caught.value.detail.startswith(error)


def test_malformed_requests_name_the_field() -> None:
    with pytest.raises(MalformedRequest, match="inputs: must hold at least one tensor"):
        codec.decode(proto.ModelInferRequest(model_name="echo"), ECHO)
    twice = request(fp32=("FP32", [1], np.array([1.0], np.float32)))
    twice.inputs.add(name="fp32", datatype="FP32", shape=[1])
    with pytest.raises(MalformedRequest, match="raw_input_contents: 1 entries for 2 inputs"):
        codec.decode(twice, ECHO)
    twice.raw_input_contents.append(b"\x00" * 4)
    with pytest.raises(MalformedRequest, match="input 'fp32' is given twice"):
        codec.decode(twice, ECHO)
    short = request(fp32=("FP32", [2], np.array([1.0, 2.0], np.float32)))
    short.raw_input_contents[0] = b"\x00" * 4
    with pytest.raises(InvalidInput, match="shape \\[2\\] of FP32 needs 8 bytes but binary_data_size is 4"):
        codec.decode(short, ECHO)
    wrong = request(fp32=("INT64", [1], np.array([1], np.int64)))
    with pytest.raises(InvalidInput, match="datatype INT64 given, model expects FP32"):
        codec.decode(wrong, ECHO)
    shared = request(fp32=("FP32", [1], np.array([1.0], np.float32)))
    shared.inputs[0].parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(InvalidInput, match="shared-memory extension is not supported"):
        codec.decode(shared, ECHO)
    negative = request(fp32=("FP32", [1], np.array([1.0], np.float32)))
    negative.inputs[0].shape[0] = -1
    with pytest.raises(MalformedRequest, match="negative size"):
        codec.decode(negative, ECHO)
