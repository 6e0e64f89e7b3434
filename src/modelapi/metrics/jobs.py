"""JobsObserver: what the job service reports, until the observer seam (events.py) carries job events.

The job service holds one (``JobService.observer``, a no-op ``JobsObserver()`` by default) and calls it where
a job is stored, where a chunk's rows are committed and where a job ends. ``MetricsObserver`` implements it.
"""

from __future__ import annotations


class JobsObserver:
    """No-op base: subclass and override what you need (``state``: succeeded, failed or cancelled)."""

    def job_submitted(self, model: str) -> None:
        pass

    def job_rows(self, model: str, rows: int) -> None:
        pass

    def job_finished(self, model: str, state: str) -> None:
        pass
