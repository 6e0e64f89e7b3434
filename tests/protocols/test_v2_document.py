"""An infer request's JSON with its floating-point data read straight into numpy: orjson's document, or none."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import pytest

from modelapi.errors import InvalidInput
from modelapi.protocols.v2 import codec as v2
from modelapi.protocols.v2 import document
from modelapi.security import json_limits
from toymodels import Echo

ECHO = v2.V2Codec(Echo())


def loads(body: bytes) -> dict[str, Any] | None:
    return document.loads(body, json_limits.openings(body))


def bits(values: Any) -> list[int]:
    return np.asarray(values, dtype=np.float64).view(np.int64).tolist()


#: numbers as JSON writes them, each read by orjson and by simdjson
NUMBERS = [
    "0.1", "-0.0", "0", "-0", "1e5", "1E+5", "2.5e-3", "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308",
    "9007199254740993", "9223372036854775807", "-9223372036854775808", "18446744073709551615", "123456789.123456789",
    "0.30000000000000004", "1e-400",
]  # fmt: skip


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_data_becomes_the_doubles_orjson_reads(datatype: str) -> None:
    body = b'{"inputs":[{"name":"x","datatype":"%s","shape":[%d],"data":[%s]}]}' % (
        datatype.encode(),
        len(NUMBERS),
        ",".join(NUMBERS).encode(),
    )
    fast = loads(body)
    assert fast is not None
    data = fast["inputs"][0]["data"]
    assert isinstance(data, np.ndarray)
    assert data.dtype == np.float64
    assert data.flags.writeable
    assert bits(data) == bits(orjson.loads(body)["inputs"][0]["data"])


def test_the_rest_of_the_document_is_orjsons() -> None:
    doc = {
        "id": "r-1",
        "parameters": {"binary_data_output": False, "tags": ["a", {"b": [1, 2.5, None, True]}], "n": 2**63 - 1},
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2, 3, 4], "parameters": {"k": [1]}},
            {"data": [0.5], "datatype": "FP32", "name": "b", "shape": [1]},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    body = orjson.dumps(doc)
    fast = loads(body)
    assert fast is not None
    data = [item.pop("data") for item in fast["inputs"]]
    expected = orjson.loads(body)
    assert [item.pop("data") for item in expected["inputs"]] == [d.tolist() for d in data]
    assert fast == expected
    assert list(fast) == list(expected)  # the keys in the body's order
    assert [list(item) for item in fast["inputs"]] == [list(item) for item in expected["inputs"]]


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[[1],[2]]}]}',  # nested: decode_tensor checks
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[3],"data":[1,[2,3],[]]}]}',  # as many numbers as elements
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,null]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,true]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,"2"]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":1}]}',
        b'{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[1]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP16","shape":[1],"data":[1]}]}',
        b'{"inputs":[{"name":"x","shape":[1],"data":[1]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]},{"name":"y","datatype":"BYTES","data":["a"]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}],"inputs":[]}',  # orjson keeps the last
        b'{"inputs":[{"name":"x","datatype":"FP64","datatype":"INT8","shape":[1],"data":[1]}]}',
        b'{"inputs":{"name":"x"}}',
        b'{"inputs":[1]}',
        b'{"id":"a"}',
        b'\xef\xbb\xbf{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}]}',  # orjson refuses a BOM
        b' {"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[18446744073709551616]}]}',  # past 64 bits
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}]',  # not JSON
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1e400]}]}',
        b'{"inputs":[{"name":"x[0]","datatype":"FP64","shape":[1],"data":[1]}]}',  # a bracket in a string
        b"[]",
    ],
)
def test_anything_else_is_left_to_orjson(body: bytes) -> None:
    assert loads(body) is None


def test_a_bracket_in_a_string_only_costs_the_fast_path() -> None:
    body = b'{"inputs":[{"name":"x[0]","datatype":"FP64","shape":[1,2],"data":[1.5,2]}]}'
    request, _ = ECHO.decode(body.replace(b"x[0]", b"fp64"))
    assert request.inputs["fp64"].tolist() == [[1.5, 2.0]]
    assert loads(body) is None


def test_the_parser_serves_the_next_body_after_one_it_gave_up() -> None:
    good = b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1.5]}]}'
    for bad in (b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,null]}]}', b'{"inputs":'):
        assert loads(bad) is None
        fast = loads(good)
        assert fast is not None
        assert fast["inputs"][0]["data"].tolist() == [1.5]


def test_each_thread_reads_its_own_documents() -> None:
    wrong: list[Any] = []

    def read(value: float) -> None:
        body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [64], "data": [value] * 64}]})
        for _ in range(500):
            fast = loads(body)
            if fast is None or fast["inputs"][0]["data"].tolist() != [value] * 64:
                wrong.append(fast)

    threads = [threading.Thread(target=read, args=(float(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


# through the codec -----------------------------------------------------------------------------------------


def test_fp32_data_past_its_range_is_a_400_naming_the_value() -> None:
    body = orjson.dumps({"inputs": [{"name": "fp32", "datatype": "FP32", "shape": [2], "data": [1.0, 1e300]}]})
    assert loads(body) is not None
    with pytest.raises(InvalidInput, match=r"input 'fp32': value 1e\+300 at element 1 is out of range for FP32"):
        ECHO.decode(body)


def test_fp32_data_is_narrowed_as_from_json_numbers() -> None:
    values = [0.1, -2.5, 3.4028234663852886e38, 1e-46, 16777217]
    body = orjson.dumps({"inputs": [{"name": "fp32", "datatype": "FP32", "shape": [5], "data": values}]})
    request, _ = ECHO.decode(body)
    arr = request.inputs["fp32"]
    assert arr.dtype == np.float32
    assert arr.tobytes() == np.array(values, dtype=np.float32).tobytes()


def test_a_count_that_does_not_fit_the_shape_is_a_400() -> None:
    body = orjson.dumps({"inputs": [{"name": "fp64", "datatype": "FP64", "shape": [2, 3], "data": [1.0] * 5}]})
    assert loads(body) is not None
    with pytest.raises(InvalidInput, match=r"input 'fp64': shape \[2, 3\] has 6 elements but 'data' has 5"):
        ECHO.decode(body)


def test_flat_data_takes_the_shape() -> None:
    body = orjson.dumps({"inputs": [{"name": "fp64", "datatype": "FP64", "shape": [2, 2], "data": [1, 2.5, 3, 4]}]})
    request, _ = ECHO.decode(body)
    assert request.inputs["fp64"].tolist() == [[1.0, 2.5], [3.0, 4.0]]
