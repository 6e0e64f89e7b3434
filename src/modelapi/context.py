"""CallContext: what a front end tells the data plane about one call.

Every front end (HTTP routes, the job runner, ``modelapi predict`` in process, gRPC later) builds one and passes
it to ``DataPlane.call``; the core reads nothing from context variables, so a front end that forgets a limit
gets a type error, not an unlimited call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sized
from dataclasses import dataclass

from .security.principal import Principal


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """How much JSON a decoder may parse: nesting depth (400 above) and elements in total (413 above)."""

    max_depth: int = 32
    max_elements: int = 2_000_000


# not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, which cost more than the
# rest of building one, on every request (docs/benchmarks-log.md, issue 16); nothing changes a CallContext once made
@dataclass(slots=True)
class CallContext:
    """One call's facts.

    ``protocol``: the front end's word for itself ("v2", "records", "v1", "mlflow", "jobs", "python"), for events.
    ``principal``: the API key calling, ``None`` when authentication is off; the data plane refuses a model the
    key may not use as if it did not exist. ``deadline``: a ``time.monotonic()`` by which the answer is due
    (504 after), tighter than the server's inference timeout when given. ``timed``: whether the server's
    per-request inference timeout and queue-time bound (max_queue_ms) apply (a batch job's chunk is bounded by
    its chunking instead).
    ``charge_rows``: called with the request's row count once its rows are validated, before they reach a
    model; it raises (429) when they would take the key over a row quota (``security/meter.py``).
    ``gone``: whether the caller has gone away now (an HTTP client's connection closing or lost), cheap and
    synchronous: the model's queue asks it as a batch forms (of the calls it walks for the batch, and of every
    waiting call when it sweeps), and drops the rows of a call whose caller is gone unrun (``ClientGone``).
    ``disconnected``, where ``gone`` is not given: a function whose awaitable completes when the caller has gone
    away; the data plane watches it with a task of its own while the call's rows wait (a task per call: ``gone``
    costs a check per batch instead).
    ``arrived``: a ``time.monotonic()`` when the front end had the request's head, where it knows: the wait
    before the data plane sees the call (a busy event loop getting to it) counts against the queue-time bound.
    ``in_progress``: the front end's requests in progress, this one included, where it counts them (its length
    is read when the model is about to be called): when this call is the only one, none could join its batch,
    and an idle model runs it at once instead of waiting a turn of the event loop for others.
    ``caller``: the connection the call came on, where the front end names it (HTTP: ``CONNECTION``): a refusal
    keeps the caller's place in the model's schedule of returns until the caller comes back, leaves or its time
    comes (``gate.Returns``).
    """

    protocol: str = "python"
    principal: Principal | None = None
    request_id: str | None = None
    deadline: float | None = None
    timed: bool = True
    json: JsonLimits = JsonLimits()
    charge_rows: Callable[[int], Awaitable[None]] | None = None
    disconnected: Callable[[], Awaitable[None]] | None = None
    arrived: float | None = None
    in_progress: Sized | None = None
    gone: Callable[[], bool] | None = None
    caller: Hashable | None = None


#: a call from Python code in this process: no key, no deadline, the server's timeout
LOCAL = CallContext()
