"""One mapping from the package's errors to gRPC status codes, with the HTTP front end's messages."""

from __future__ import annotations

import grpc
import pytest

from modelapi import errors
from modelapi.grpc.errors import INTERNAL_MESSAGE, status_of


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("input 'a': bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.MalformedRequest("inputs: missing"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthorized("no key"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Forbidden("admin only"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.ModelNotFound("no model named 'x'"), grpc.StatusCode.NOT_FOUND),
        (errors.PayloadTooLarge("too many rows"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.TooManyRequests("slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Overloaded("busy"), grpc.StatusCode.UNAVAILABLE),
        (errors.ModelNotReady("loading"), grpc.StatusCode.UNAVAILABLE),
        (errors.InferenceTimeout("too slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.InferenceError("model 'x' failed to predict"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_has_its_code_and_keeps_its_message(error: errors.ModelAPIError, code: grpc.StatusCode) -> None:
    assert status_of(error)[:2] == (code, error.detail)


def test_retry_after_travels_as_trailing_metadata() -> None:
    error = errors.Overloaded("busy", headers={"Retry-After": "2", "WWW-Authenticate": "Bearer"})
    assert status_of(error)[2] == (("retry-after", "2"),)


def test_an_unexpected_exception_reveals_nothing(caplog: pytest.LogCaptureFixture) -> None:
    code, message, trailers = status_of(RuntimeError("/srv/secret/path.bin exploded"))
    assert (code, message, trailers) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, ())
    assert "/srv/secret" in caplog.text  # the operator sees it in the log, the client does not
