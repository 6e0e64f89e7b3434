"""The in-process job workers (jobs/runner.py): a worker stops when it is told to, whatever it was waiting for."""

from __future__ import annotations

import asyncio
from typing import Any

from modelapi.jobs.runner import LocalRunner


class _NoJobs:
    """A job service with nothing to claim."""

    async def run(self, job_id: str | None, worker: str) -> None:
        return None


def test_a_worker_cancelled_as_its_wake_up_comes_stops() -> None:
    """The server's shutdown cancels each worker (``LocalRunner.stop``) and waits for it. A worker cancelled in the
    turn its wake-up came (maintenance sets it every lease/2, a new job sets it) went on polling for jobs, so the
    shutdown waited for ever: Python 3.11's ``asyncio.wait_for`` returned the wake-up and dropped the cancel."""

    async def main() -> None:
        service: Any = _NoJobs()
        runner = LocalRunner(service, 1)
        worker = asyncio.create_task(runner._work(runner.workers[0]))
        await asyncio.sleep(0.01)  # the worker found no job and waits for a wake-up
        runner._wake.set()
        await asyncio.sleep(0)  # the wake-up's wait ends in this turn...
        worker.cancel()  # ...and the worker is cancelled before it runs again
        done, _ = await asyncio.wait({worker}, timeout=2.0)
        assert done == {worker} and worker.cancelled()

    asyncio.run(main())
