"""An infer request's JSON with its numeric data read straight into numpy: what orjson's document decodes to, or
no document (orjson's, with its errors)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import pytest
import simdjson

from modelapi.errors import ModelAPIError
from modelapi.protocols.v2 import codec as v2
from modelapi.protocols.v2 import document
from modelapi.security import json_limits
from toymodels import Echo

ECHO = v2.V2Codec(Echo())
BYTES_PER_OPENING, MIN_BYTES = document._BYTES_PER_OPENING, document._MIN_BYTES


@pytest.fixture(autouse=True)
def small_bodies_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk's rules, on bodies small enough to read: the bytes a body needs for each bracket (a cost policy,
    tested on its own below) are set aside."""
    monkeypatch.setattr(document, "_BYTES_PER_OPENING", 0)
    monkeypatch.setattr(document, "_MIN_BYTES", 0)


def loads(body: bytes) -> dict[str, Any] | None:
    return document.loads(body, json_limits.openings(body))


def tensor_of(name: str, shape: list[int], data: Any, datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def body_of(datatype: str, shape: list[int], data: Any, name: str = "x") -> bytes:
    """A request with one input; ``data`` as bytes is its JSON text as it is (numbers orjson cannot write)."""
    if isinstance(data, bytes):
        return body_of(datatype, shape, [], name).replace(b'"data":[]', b'"data":' + data)
    return orjson.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]})


def decoded(body: bytes) -> Any:
    """What the codec makes of ``body``: each input's dtype, shape and bytes, or the error's class and text."""
    try:
        request, _ = ECHO.decode(body)
    except ModelAPIError as exc:
        return type(exc).__name__, exc.detail
    return {
        name: (arr.dtype.str, arr.shape, arr.tolist() if arr.dtype.kind == "O" else arr.tobytes())
        for name, arr in request.inputs.items()
    }


#: numbers as JSON writes them
NUMBERS = [
    "0.1", "-0.0", "0", "-0", "1e5", "1E+5", "2.5e-3", "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308",
    "9007199254740993", "9223372036854775807", "-9223372036854775808", "18446744073709551615", "123456789.123456789",
    "0.30000000000000004", "1e-400",
]  # fmt: skip

#: bodies each datatype's data may come in, right and wrong: the codec makes the same of each either way
CASES: list[tuple[str, list[int], Any]] = [
    ("FP64", [2, 3], [[1.5, 2, 3], [4, 5, 6.25]]),
    ("FP64", [2, 2, 2], [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
    ("FP64", [2, 0], [[], []]),
    ("FP64", [0, 4], []),
    ("FP64", [], [7.5]),
    ("FP64", [2, 3], [1, 2, 3, 4, 5]),
    ("FP64", [2, 3], [[1, 2], [3, 4], [5, 6]]),
    ("FP64", [2, 2], [[1, 2], [3]]),
    ("FP64", [2, 2], [[1, 2], 3]),
    ("FP64", [2], [[1], [2]]),
    ("FP64", [2, 1], [[1], [2]]),
    ("FP64", [3], [1, [2, 3], []]),
    ("FP64", [2, 2], [[1, [2]], [3, 4]]),
    ("FP64", [2], b"[18446744073709551616, 1e400]"),
    ("FP64", [2], b"[18446744073709551616, 2]"),
    ("FP64", [3], b"[1E+2, -0, 0.30000000000000004]"),
    ("FP32", [3], [0.1, -2.5, 3.4028234663852886e38]),
    ("FP32", [2], [1.0, 1e300]),
    ("FP32", [3], [1e-46, 16777217, 2**60 + 2**36 + 1]),
    ("FP16", [2], [1.0, 70000.0]),
    ("FP16", [1], [70000]),
    ("FP16", [1], b"[9007199254740993]"),
    ("FP16", [3], [0.1, 65504, -2]),
    ("INT64", [4], [-(2**63), 0, 2**63 - 1, 5]),
    ("INT64", [1], [2**63]),
    ("INT64", [2], [1, 2.0]),
    ("INT32", [2, 2], [[1, -(2**31)], [2**31 - 1, 0]]),
    ("INT32", [1], [2**31]),
    ("INT8", [3], [-128, 0, 127]),
    ("INT8", [2], [1, 300]),
    ("INT8", [1], [-129]),
    ("UINT8", [2], [0, 255]),
    ("UINT8", [1], [-1]),
    ("UINT32", [1], [2**32 - 1]),
    ("UINT64", [3], [0, 2**63, 2**64 - 1]),
    ("UINT64", [1], [-1]),
    ("INT16", [1], [1.5]),
    ("FP64", [2], [1.0, None]),
    ("FP64", [2], [1.0, True]),
    ("FP64", [2], [1.0, "2"]),
    ("BOOL", [2], [True, False]),
    ("BYTES", [2], ["a", "b"]),
    ("BF16", [1], [1.0]),
]


@pytest.mark.parametrize(("datatype", "shape", "data"), CASES)
def test_the_codec_makes_the_same_of_a_body_as_from_orjson(
    datatype: str, shape: list[int], data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = datatype.lower() if datatype != "BF16" else "fp32"
    body = body_of(datatype, shape, data, name)
    fast = decoded(body)
    monkeypatch.setattr(document, "loads", lambda body, openings: None)
    assert fast == decoded(body)


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_numbers_become_the_doubles_orjson_reads(datatype: str) -> None:
    body = b'{"inputs":[{"name":"x","datatype":"%s","shape":[%d],"data":[%s]}]}' % (
        datatype.encode(),
        len(NUMBERS),
        ",".join(NUMBERS).encode(),
    )
    fast = loads(body)
    assert fast is not None
    data = fast["inputs"][0]["data"].array
    assert isinstance(data, np.ndarray) and data.dtype == np.float64 and data.flags.writeable
    expected = np.array(orjson.loads(body)["inputs"][0]["data"], dtype=np.float64)
    assert data.view(np.int64).tolist() == expected.view(np.int64).tolist()


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [("FP64", [[1, 2.5]], np.float64), ("INT8", [[1, 2]], np.int64), ("UINT64", [[2**64 - 1, 0]], np.uint64)],
)
def test_nested_data_is_read_flat_into_one_buffer(datatype: str, data: list[Any], dtype: type) -> None:
    fast = loads(body_of(datatype, [1, 2], data))
    assert fast is not None
    arr = fast["inputs"][0]["data"].array
    assert arr.dtype == dtype and arr.tolist() == data[0]


def test_the_rest_of_the_document_is_orjsons() -> None:
    doc = {
        "id": "r-1",
        "parameters": {"binary_data_output": False, "tags": ["a", {"b": [1, 2.5, None, True]}], "n": 2**63 - 1},
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2, 3, 4], "parameters": {"k": [1]}},
            {"data": [5], "datatype": "INT32", "name": "b", "shape": [1]},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    body = orjson.dumps(doc)
    fast = loads(body)
    assert fast is not None
    data = [item.pop("data") for item in fast["inputs"]]
    expected = orjson.loads(body)
    assert [item.pop("data") for item in expected["inputs"]] == [d.array.tolist() for d in data]
    assert fast == expected
    assert list(fast) == list(expected)  # the keys in the body's order
    assert [list(item) for item in fast["inputs"]] == [list(item) for item in expected["inputs"]]


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[[1],[2]]}]}',  # decode_tensor's message
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[3],"data":[1,[2,3],[]]}]}',  # as many numbers as elements
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2,2],"data":[[1,2],[3,[4]]]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,null]}]}',
        b'{"inputs":[{"name":"x","datatype":"INT64","shape":[2],"data":[1,2.0]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":1}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[true],"data":[1]}]}',
        b'{"inputs":[{"name":"x","datatype":"BOOL","shape":[1],"data":[true]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP16","shape":[1],"data":[1]}]}',  # its messages name the number
        b'{"inputs":[{"name":"x","shape":[1],"data":[1]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]},{"name":"y","datatype":"BYTES","data":["a"]}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}],"inputs":[]}',  # orjson keeps the last
        b'{"inputs":[{"name":"x","datatype":"FP64","datatype":"INT8","shape":[1],"data":[1]}]}',
        # a key with a NUL: simdjson looks "shape\u0000" up as "shape", and would count that array twice
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,[2]],"shape\\u0000":0}]}',
        b'{"inputs":[{"name":"x","datatype":"FP64","shape":[4],"data":[1,[2,3],4]}],"inputs\\u0000":null}',
        b'{"id\\u0000":"q","id":"r","inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}]}',
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


def test_the_parser_serves_the_next_body_after_one_it_gave_up() -> None:
    good = body_of("FP64", [1], [1.5])
    for bad in (body_of("FP64", [2], [1, None]), body_of("INT8", [2], [1, 2.5]), b'{"inputs":'):
        assert loads(bad) is None
        fast = loads(good)
        assert fast is not None and fast["inputs"][0]["data"].array.tolist() == [1.5]


def test_a_large_body_has_a_parser_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread's parser keeps the capacity of the largest document it parsed: a large body's is made for it."""
    assert loads(body_of("FP64", [1], [2.5])) is not None  # the thread's parser, made
    made: list[simdjson.Parser] = []
    real = simdjson.Parser
    monkeypatch.setattr(simdjson, "Parser", lambda: made.append(real()) or made[-1])
    values = np.random.default_rng(0).normal(size=200_000)
    body = body_of("FP64", [1000, 200], values.reshape(1000, 200).tolist())
    assert len(body) > document._KEPT_BYTES
    fast = loads(body)
    assert fast is not None and fast["inputs"][0]["data"].array.tobytes() == values.tobytes()
    assert len(made) == 1
    assert loads(body_of("FP64", [1], [2.5])) is not None
    assert len(made) == 1  # the thread's own again


def test_a_body_of_few_numbers_a_bracket_goes_to_orjson_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(document, "_BYTES_PER_OPENING", BYTES_PER_OPENING)
    monkeypatch.setattr(document, "_MIN_BYTES", MIN_BYTES)
    columns = orjson.dumps({"inputs": [tensor_of(f"c{i}", [200], [0.5] * 200) for i in range(20)]})
    assert len(columns) > MIN_BYTES and loads(columns) is not None  # many numbers a column
    assert loads(orjson.dumps({"inputs": [tensor_of(f"c{i}", [1], [0.5]) for i in range(400)]})) is None
    assert loads(body_of("FP64", [1, 20], [np.linspace(0, 1, 20).tolist()])) is None  # one row: under MIN_BYTES
    assert loads(body_of("FP64", [32, 20], np.linspace(0, 1, 640).reshape(32, 20).tolist())) is not None


def test_an_unexpected_error_leaves_the_body_to_orjson_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(doc: Any, openings: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(document, "_document", broken)
    monkeypatch.setattr(document, "_failed", False)
    body = body_of("FP64", [1], [1.5], "fp64")
    assert loads(body) is None and loads(body) is None
    assert caplog.text.count("parsed by orjson after an unexpected error") == 1
    assert ECHO.decode(body)[0].inputs["fp64"].tolist() == [1.5]


@pytest.mark.parametrize("kind", [str, memoryview])
def test_a_body_given_as_another_type_is_read_as_before(kind: Any) -> None:
    body = body_of("FP64", [2], [1.5, 2], "fp64")
    request, _ = ECHO.decode(kind(body.decode()) if kind is str else kind(body))
    assert request.inputs["fp64"].tolist() == [1.5, 2.0]


def test_each_thread_reads_its_own_documents() -> None:
    wrong: list[Any] = []

    def read(value: float) -> None:
        body = body_of("FP64", [64], [value] * 64)
        for _ in range(500):
            fast = loads(body)
            if fast is None or fast["inputs"][0]["data"].array.tolist() != [value] * 64:
                wrong.append(fast)

    threads = [threading.Thread(target=read, args=(float(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_only_its_own_arrays_are_taken_as_read() -> None:
    """An array a caller of ``decode_parsed`` hands in is refused as before: only ``loads``'s ``Numbers`` are read."""
    for data in (np.zeros(3), np.arange(3), np.zeros((1, 3))):
        with pytest.raises(ModelAPIError, match="'data' must be an array"):
            ECHO.decode_parsed({"inputs": [{"name": "fp64", "datatype": "FP64", "shape": [3], "data": data}]})
