"""Errors, one class per condition.

Each carries the HTTP status it maps to; ``http/errors.py`` turns them into responses in one place, so the
rest of the package never builds an error response itself::

    ModelAPIError (500)
    ├── BadRequest (400)
    │   ├── MalformedRequest        the body cannot be parsed
    │   └── InvalidInput            parsed, but does not match the model's signature
    ├── Unauthorized (401)          no API key, or one that is malformed, unknown, expired or revoked
    ├── Forbidden (403)             a valid key without the scope the route needs
    ├── NotFound (404)
    │   ├── RouteNotFound
    │   ├── ModelNotFound           also an unknown version
    │   └── JobNotFound             also a job of another API key
    ├── MethodNotAllowed (405)
    ├── NotAcceptable (406)         no answer format the client accepts
    ├── RequestTimeout (408)        the body did not arrive within the body-read timeout
    ├── Conflict (409)              the resource is not in a state that allows it (e.g. a job's result)
    ├── PayloadTooLarge (413)       body over the byte limit, or too many rows
    ├── UnsupportedMediaType (415)
    ├── TooManyRequests (429)       the API key is over its request rate (with Retry-After)
    ├── ModelNotReady (503)
    ├── Overloaded (503)            too many requests in flight for the model, or too long a wait (Retry-After)
    │   ├── QueueTimeout            waited longer than the queue-time limit before its batch formed
    │   └── EarlyRetry              retried before its Retry-After: held until then, never run (Retry-After: 0)
    ├── InferenceTimeout (504)      the answer took longer than the inference timeout
    ├── ClientGone (499)            the client disconnected while its request waited (nobody reads the answer)
    ├── InferenceError (500)        the model raised; details go to the log, not the client
    └── ModelLoadError (500)        a model cannot be loaded (raised at start-up, not per request)
        └── UntrustedModel          pickle-based file without the operator's trust

``version``: the model version that refused the call, set by the data plane on an error raised while a call held
its version (``dataplane.Call``: decoding against its signature, validation, row limits, the model's own
failure, queue time, timeouts); ``None`` for one raised before a version was chosen (unknown model, keys, rate
limits, refusals on the request's head), and for a key's row quota (a ``TooManyRequests`` the call raises once it
knows the rows: the key's limit refused it, not the version). REST answers name it in a ``Model-Version``
header, as they name the version of a prediction (``http/errors.py``).
"""

from __future__ import annotations

from collections.abc import Mapping


class ModelAPIError(Exception):
    status: int = 500
    title: str = "Internal Server Error"
    #: the version that refused the call, once the data plane knows it (a class default: nothing per instance)
    version: str | None = None

    def __init__(self, detail: str = "", *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})


class BadRequest(ModelAPIError):
    status = 400
    title = "Bad Request"


class MalformedRequest(BadRequest):
    title = "Malformed Request"


class InvalidInput(BadRequest):
    """``field``: the input (feature) the problem is with, when it is one; problem+json answers carry it as
    ``"field"`` so that a form can show the message next to that field (``http/errors.py``)."""

    title = "Invalid Input"

    def __init__(self, detail: str = "", *, field: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers)
        self.field = field


class Unauthorized(ModelAPIError):
    status = 401
    title = "Unauthorized"


class Forbidden(ModelAPIError):
    status = 403
    title = "Forbidden"


class NotFound(ModelAPIError):
    status = 404
    title = "Not Found"


class RouteNotFound(NotFound):
    pass


class ModelNotFound(NotFound):
    title = "Model Not Found"


class JobNotFound(NotFound):
    title = "Job Not Found"


class MethodNotAllowed(ModelAPIError):
    status = 405
    title = "Method Not Allowed"


class NotAcceptable(ModelAPIError):
    status = 406
    title = "Not Acceptable"


class RequestTimeout(ModelAPIError):
    status = 408
    title = "Request Timeout"


class Conflict(ModelAPIError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ModelAPIError):
    status = 413
    title = "Content Too Large"


class UnsupportedMediaType(ModelAPIError):
    status = 415
    title = "Unsupported Media Type"


class TooManyRequests(ModelAPIError):
    status = 429
    title = "Too Many Requests"


class Overloaded(ModelAPIError):
    status = 503
    title = "Overloaded"


class QueueTimeout(Overloaded):
    title = "Queue Timeout"


class EarlyRetry(Overloaded):
    title = "Early Retry"


class ClientGone(ModelAPIError):
    status = 499  # nginx's "client closed request": no response reaches anyone
    title = "Client Closed Request"


class InferenceTimeout(ModelAPIError):
    status = 504
    title = "Inference Timeout"


class ModelNotReady(ModelAPIError):
    status = 503
    title = "Model Not Ready"


class InferenceError(ModelAPIError):
    status = 500
    title = "Inference Error"


class ModelLoadError(ModelAPIError):
    title = "Model Load Error"


class UntrustedModel(ModelLoadError):
    title = "Untrusted Model"
