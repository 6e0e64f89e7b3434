"""Jobs inside the server: the service, plus in-process workers, or (with a Redis URL) a dispatcher to RQ."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..dataplane import DataPlane
from ..settings import Settings
from .runner import LocalRunner, maintain
from .service import JobService

log = logging.getLogger("modelapi.jobs")


class JobsHost:
    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.service = JobService(dataplane, settings)
        self._runner: LocalRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.service.settings
        if settings.redis_url:
            try:
                from .rq_runner import Dispatcher, connect, make_queue
            except ImportError as exc:
                raise ValueError(f"redis_url needs the queue extra: pip install 'modelapi[queue]' ({exc})") from None

            dispatcher = Dispatcher(self.service, make_queue(connect(settings.redis_url), settings.job_queue))
            self.service.notify = dispatcher.send
            self._task = asyncio.create_task(self._redeliver(dispatcher))
        else:
            self._runner = LocalRunner(self.service, settings.job_workers)
            await self._runner.start()

    async def _redeliver(self, dispatcher: object) -> None:
        from .rq_runner import Dispatcher

        assert isinstance(dispatcher, Dispatcher)
        settings = self.service.settings
        while True:
            try:
                store = self.service.store()
                await asyncio.to_thread(maintain, store, settings.job_retention_s)
                await asyncio.to_thread(dispatcher.redeliver)
            except Exception:
                log.exception("job maintenance failed (database or Redis unreachable?)")
            await asyncio.sleep(min(60.0, settings.job_lease_s / 2))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.service.close()
