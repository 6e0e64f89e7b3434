"""Prometheus metrics for modelapi, right across worker processes.

The order matters, because prometheus-client chooses where values live when a metric is created:

1. ``setup(directory)`` once per server, before workers fork (``None``: a single process);
2. in each worker, ``MetricsObserver()`` subscribed to the repository's events (and handed to the job
   service), samplers registered (``watch_queues``, ``watch_jobs``) and ``sample_forever`` started;
3. a scrape: ``await refresh_async()``, then ``render()`` -> (body, content type); observers tally requests
   in plain Python and push them into the values at most once a second (``sample_forever``) and before
   every ``render`` (``flush``);
4. the supervisor calls ``worker_died(pid)`` for every worker it reaps, and ``shutdown()`` at the end.

``docs/observability.md`` tables every metric.
"""

from __future__ import annotations

from .jobs import JobsObserver
from .observer import MetricsObserver
from .runtime import collect, directory, families, flush, multiprocess, render, setup, shutdown, worker_died
from .sampling import (
    add_sampler,
    clear_samplers,
    job_counts,
    queued_in,
    refresh,
    refresh_async,
    remove_sampler,
    sample_forever,
    watch_jobs,
    watch_queues,
)

__all__ = [
    "JobsObserver",
    "MetricsObserver",
    "add_sampler",
    "clear_samplers",
    "collect",
    "directory",
    "families",
    "flush",
    "job_counts",
    "multiprocess",
    "queued_in",
    "refresh",
    "refresh_async",
    "remove_sampler",
    "render",
    "sample_forever",
    "setup",
    "shutdown",
    "watch_jobs",
    "watch_queues",
    "worker_died",
]
