"""The protocols the server speaks, each a package owning its codec, routes, OpenAPI fragment and error style.

``registered()`` is the one registration: a new protocol adds its package and one entry here. The packages
are imported on first use, not with this one, so that a codec (``protocols.records.codec``, which the job
runner uses) imports without the web routes.
"""

from __future__ import annotations

import functools

from .base import PROBLEM, ErrorStyle, Protocol


@functools.cache
def registered() -> tuple[Protocol, ...]:
    """Every protocol, in route order (the document and docs routes are served the same way)."""
    from ..http.docs import PROTOCOL as docs
    from .jobs.routes import PROTOCOL as jobs
    from .metrics.routes import PROTOCOL as metrics
    from .mlflow.routes import PROTOCOL as mlflow
    from .monitor.routes import PROTOCOL as monitor
    from .playground.routes import PROTOCOL as playground
    from .records.routes import PROTOCOL as records
    from .v1.routes import PROTOCOL as v1
    from .v2.routes import PROTOCOL as v2

    return (v2, records, v1, docs, jobs, mlflow, metrics, monitor, playground)


def error_style_for(path: str) -> ErrorStyle:
    """The style of an error raised before routing: that of the protocol owning ``path``, else problem+json."""
    for protocol in registered():
        if protocol.owns(path):
            return protocol.error_style
    return PROBLEM


__all__ = ["PROBLEM", "ErrorStyle", "Protocol", "error_style_for", "registered"]
