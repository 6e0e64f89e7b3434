"""Request bodies with a Content-Encoding, on every route that reads a body, and the inflater's guarantees."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.testclient import TestClient

from modelapi.errors import MalformedRequest, PayloadTooLarge
from modelapi.http.app import create_app
from modelapi.http.request import Inflater, read_body
from modelapi.settings import Settings
from toymodels import IrisClassifier

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
LIMIT = 1_000_000

#: one JSON body for each family of routes that reads one (friendly, V1, MLflow, V2)
BODIES: dict[str, Any] = {
    "/predict": ROW,
    "/models/iris/predict": [ROW, VIRGINICA],
    "/v1/models/iris:predict": {"instances": [ROW, VIRGINICA]},
    "/invocations": {"dataframe_records": [ROW, VIRGINICA]},
    "/models/iris/invocations": {"dataframe_split": {"data": [list(ROW.values())]}},
    "/v2/models/iris/infer": {
        "inputs": [{"name": k, "datatype": "FP64", "shape": [1], "data": [v]} for k, v in ROW.items()]
    },
}
CODINGS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app([IrisClassifier()], Settings(max_body_bytes=LIMIT, job_workers=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """100 MB of zeros, gzipped to about 100 kB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(100)) + packer.flush()


def error_text(r: Any) -> str:
    body = r.json()
    return str(body["error"] if r.request.url.path.startswith("/v2/") else body["detail"])


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("path", BODIES)
def test_a_compressed_body_answers_as_the_plain_one(client: TestClient, path: str, coding: str) -> None:
    raw = orjson.dumps(BODIES[path])
    plain = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert plain.status_code == 200, plain.text
    packed = client.post(
        path, content=CODINGS[coding](raw), headers={"content-type": "application/json", "content-encoding": coding}
    )
    assert packed.status_code == 200, packed.text
    if path.startswith("/v2/"):
        assert packed.json()["outputs"] == plain.json()["outputs"]
    else:
        assert packed.json() == plain.json()


def test_identity_and_a_compressed_csv_body(client: TestClient) -> None:
    csv = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    plain = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert plain.status_code == 200, plain.text
    for coding, body in [("identity", csv), ("GZIP", gzip.compress(csv)), (" deflate ", zlib.compress(csv))]:
        r = client.post("/invocations", content=body, headers={"content-type": "text/csv", "content-encoding": coding})
        assert r.status_code == 200 and r.json() == plain.json(), (coding, r.text)


@pytest.mark.parametrize("path", BODIES)
def test_a_decompression_bomb_is_413_without_inflating_it(client: TestClient, bomb: bytes, path: str) -> None:
    tracemalloc.start()
    try:
        r = client.post(path, content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413, r.text
    assert f"decompressed request body is larger than the limit of {LIMIT} bytes" in error_text(r)
    assert peak < 8 * LIMIT  # it stops after LIMIT bytes; the bomb inflates to 100 MB


@pytest.mark.parametrize("path", BODIES)
def test_an_unknown_encoding_is_415_naming_the_supported_ones(client: TestClient, path: str) -> None:
    r = client.post(path, content=b"{}", headers={"content-type": "application/json", "content-encoding": "br"})
    assert r.status_code == 415, r.text
    assert "content encoding 'br' is not supported; use gzip, deflate or none" in error_text(r)
    assert r.headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("coding", "body", "words"),
    [
        ("gzip", b"not gzip at all", "not valid gzip data"),
        ("deflate", b"not deflate", "not valid deflate data"),
        # mtime 0: the test's id holds the bytes, and must be the same in every xdist worker
        ("gzip", gzip.compress(orjson.dumps(ROW), mtime=0)[:-6], "truncated gzip data"),
        ("gzip", b"", "truncated gzip data"),
        ("deflate", zlib.compress(b"{}") + b"more", "data after the end of its deflate stream"),
    ],
)
@pytest.mark.parametrize("path", BODIES)
def test_a_corrupt_stream_is_400(client: TestClient, path: str, coding: str, body: bytes, words: str) -> None:
    r = client.post(path, content=body, headers={"content-type": "application/json", "content-encoding": coding})
    assert r.status_code == 400, r.text
    assert words in error_text(r)


# the inflater itself --------------------------------------------------------------------------------------
def inflate(coding: str, blocks: list[bytes], limit: int = LIMIT) -> bytes:
    inflater = Inflater(coding, limit)
    out = b"".join(inflater.feed(block) for block in blocks)
    inflater.finish()
    return out


def test_block_by_block_equals_whole_and_gzip_members_follow_each_other() -> None:
    data = orjson.dumps([ROW] * 500)
    for coding, packed in [("gzip", gzip.compress(data)), ("deflate", zlib.compress(data))]:
        assert inflate(coding, [packed]) == data
        assert inflate(coding, [packed[i : i + 7] for i in range(0, len(packed), 7)]) == data
    two = gzip.compress(b"[1,") + bytes(4) + gzip.compress(b"2]")  # `cat a.gz b.gz`, zero padding between
    assert inflate("gzip", [two]) == b"[1,2]"
    assert inflate("gzip", [two[:5], two[5:25], two[25:]]) == b"[1,2]"
    with pytest.raises(MalformedRequest, match="not valid gzip data"):
        inflate("gzip", [gzip.compress(b"[1]") + b"junk"])


def test_the_limit_is_exact_and_counted_across_blocks() -> None:
    data = bytes(1000)
    packed = gzip.compress(data)
    assert inflate("gzip", [packed], limit=1000) == data
    with pytest.raises(PayloadTooLarge):
        inflate("gzip", [packed], limit=999)
    with pytest.raises(PayloadTooLarge):
        inflate("gzip", [packed[i : i + 3] for i in range(0, len(packed), 3)], limit=999)


def test_a_bomb_never_takes_much_more_memory_than_the_limit(bomb: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            inflate("gzip", [bomb], limit=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * LIMIT  # the bomb inflates to 100 MB


SEQUENCES: list[list[dict[str, Any]]] = [
    [{"type": "http.request", "body": b"abc"}],
    [{"type": "http.request"}],
    [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}],
    [{"type": "http.request", "body": b"", "more_body": True}, {"type": "other"}, {"type": "http.request"}],
    [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}],
]


@pytest.mark.parametrize("messages", SEQUENCES)
def test_the_body_read_is_starlettes(messages: list[dict[str, Any]]) -> None:
    """``read_body`` reads in its own coroutine what Starlette's ``Request.body`` would: the same body or
    ``ClientDisconnect``, the same state left on the request (a second read, the stream consumed, a disconnect)."""

    def outcome(read: Callable[[Request], Any]) -> tuple[Any, ...]:
        queue = list(messages)

        async def receive() -> Any:
            return queue.pop(0)

        request = Request({"type": "http", "method": "POST", "headers": []}, receive)

        async def both() -> tuple[Any, ...]:
            try:
                first: Any = await read(request)
            except ClientDisconnect:
                first = "disconnect"
            again = await request.body() if first != "disconnect" else None
            return first, again, request._stream_consumed, request._is_disconnected, len(queue)

        return asyncio.run(both())

    assert outcome(lambda request: read_body(request, LIMIT)) == outcome(lambda request: request.body())
