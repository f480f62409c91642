"""Trainings on workers, seen from the bot: a `TrainingBackend`, like the in-process TrainingQueue.

With TRAINING_BACKEND=queue (the default on PostgreSQL) the bot trains nothing itself. A stored
job is deferred to procrastinate (storage/taskqueue.py); some `python -m bot.worker` takes it,
trains, and writes its progress, its checkpoints and the finished persona into the database.
This side watches the `training_jobs` rows and turns what changed into the same events the
local queue emits, so the cogs cannot tell the two apart:

    training_progress(job, progress)   a running job's progress changed
    training_resumed(job, step)        a worker took over a job whose worker died (step: its checkpoint)
    training_finished(outcome)         a job ended (announced by exactly one bot process)

A database outage only delays these: every poll that fails is logged and tried again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.core.storage import JobRecord, ModelRecord, Storage, taskqueue
from bot.core.training.recipe import TrainProgress
from bot.core.training.trainrun import EventSink, JobOutcome, dispatch_event

log = logging.getLogger(__name__)


class WorkerQueue:
    def __init__(
        self,
        storage: Storage,
        url: str,
        *,
        poll_seconds: float = 1.0,
        prepare_model: Callable[[ModelRecord], Awaitable[Any]] | None = None,
    ):
        self.storage = storage
        self.jobs = storage.jobs
        self.url = url
        self.poll_seconds = poll_seconds
        self.prepare_model = prepare_model  # makes a finished persona loadable here (LoRA from the database)
        self.app: Any = None
        self.emit: EventSink | None = None
        self.recovered: list[JobRecord] = []  # workers resume interrupted jobs; the bot has none of its own
        self._progress: dict[int, dict[str, Any]] = {}
        self._watcher: asyncio.Task | None = None

    async def start(self) -> None:
        self.app = taskqueue.training_app(self.url)
        await self.app.open_async()
        await taskqueue.ensure_schema(self.app)
        for job in await self.jobs.list_queued():  # stored while no bot could defer it (crash, outage)
            await taskqueue.defer_training(self.app, job.id)
        self._watcher = asyncio.create_task(self._watch(), name="training-watcher")

    async def stop(self, timeout: float | None = None) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self.app is not None:
            await self.app.close_async()

    async def submit(self, job: JobRecord) -> None:
        await taskqueue.defer_training(self.app, job.id)

    async def cancel(self, job_id: int) -> bool:
        """The worker sees the request at its next progress report and stops after that step."""
        return await self.jobs.request_cancel(job_id)

    def notify(self) -> None:
        pass

    def resume_step(self, job_id: int) -> int | None:
        return None

    def progress_of(self, job_id: int) -> TrainProgress | None:
        progress = self._progress.get(job_id)
        return _as_progress(progress) if progress else None

    async def wait_idle(self, timeout: float | None = None) -> None:
        async def idle() -> None:
            while await self.jobs.active_count() or await self.jobs.ended_unannounced():
                await asyncio.sleep(0.1)

        await asyncio.wait_for(idle(), timeout)

    # -- watching the workers ----------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarts, a connection drops: try again
                log.warning("Could not read the trainings' state (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(self.poll_seconds)

    async def poll(self) -> None:
        running = await self.jobs.running()
        for job in running:
            taken_over = job.interrupted > job.resumes_told
            if taken_over and await self.jobs.claim_resume_notice(job.id, job.interrupted):
                await self._dispatch("training_resumed", job, job.resume_step)
            if job.progress and job.progress != self._progress.get(job.id):
                self._progress[job.id] = job.progress
                await self._dispatch("training_progress", job, _as_progress(job.progress))
        for job_id in set(self._progress) - {job.id for job in running}:
            self._progress.pop(job_id, None)
        for job in await self.jobs.ended_unannounced():
            model = await self.storage.models.get(job.guild_id, job.handle) if job.state == "done" else None
            if model is not None and self.prepare_model is not None:
                await self.prepare_model(model)  # before anyone is told: the loss curve is read from it
            if await self.jobs.claim_announcement(job.id):
                log.info("Training job %s ended on a worker: %s", job.id, job.state)
                await self._dispatch(
                    "training_finished", JobOutcome(job=job, state=job.state, error=job.error, model=model)
                )

    async def _dispatch(self, event: str, *args: Any) -> None:
        await dispatch_event(self.emit, event, *args)


def _as_progress(progress: dict[str, Any]) -> TrainProgress:
    known = TrainProgress.__dataclass_fields__
    return TrainProgress(**{k: v for k, v in progress.items() if k in known})
