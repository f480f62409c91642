"""The training queue: persisted jobs, run one at a time (by default) in a thread pool.

Jobs live in the registry, so a queued job survives a restart, and a job that was running when
the process died is put back in the queue at start-up (`recovered`), to resume from its last
checkpoint (MODELS_DIR/.checkpoints/job-<id>/) when it has one. The event loop only
claims jobs and records results; the training itself and every file write run in the
executor. Progress comes back from the worker thread through `call_soon_threadsafe` and goes
out as two events through one sink (the bot turns them into discord.py events):
`emit("training_progress", job, progress)` and `emit("training_finished", outcome)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from bot.core.errors import TrainingError
from bot.core.personas.modelstore import ModelStore
from bot.core.personas.versions import publish_version
from bot.core.storage import JobRecord, Storage
from bot.core.training.checkpoint import checkpoint_step
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig, TrainProgress, TrainResult
from bot.core.training.trainrun import (
    EventSink,
    JobOutcome,
    RunHandle,
    Settled,
    dispatch_event,
    progress_to_loop,
    settle,
    starting_point,
    train_and_publish,
)
from bot.core.training.voicereport import ReportPlan

log = logging.getLogger(__name__)

PROGRESS_SAVE_INTERVAL = 5.0  # seconds between progress writes to the database
STOP_TIMEOUT = 120.0  # longest wait at shutdown for a training step to end and checkpoint


class TrainingQueue:
    """The in-process `TrainingBackend`: the bot's own thread pool trains its jobs."""

    def __init__(
        self,
        storage: Storage,
        store: ModelStore,
        executor: Executor,
        make_config: Callable[[JobRecord], TrainConfig],
        *,
        workers: int = 1,
        train_fn: Callable[..., TrainResult] = train,
        report: ReportPlan | None = None,
        versions_kept: int = 2,
    ):
        self.storage = storage
        self.jobs = storage.jobs
        self.models = storage.models
        self.versions_kept = versions_kept
        self.store = store
        self.executor = executor
        self.make_config = make_config
        self.workers = workers
        self.train_fn = train_fn
        self.report = report  # the voice report after each training (None: none)
        self.running: dict[int, RunHandle] = {}
        self.recovered: list[JobRecord] = []  # jobs a previous process left running
        self._resume_steps: dict[int, int | None] = {}
        self.emit: EventSink | None = None
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.recovered = await self.jobs.requeue_interrupted()
        await asyncio.to_thread(self.store.drop_checkpoints_except, await self.jobs.active_ids())
        self._resume_steps = {
            job.id: checkpoint_step(self.store.checkpoint_dir(job.id)) for job in self.recovered
        }
        for job in self.recovered:
            step = self.resume_step(job.id)
            log.warning(
                "Training job %s (%s) was interrupted by a restart; it is queued again%s",
                job.id,
                job.handle,
                f" and resumes from step {step}" if step else "",
            )
        self._tasks = [
            asyncio.create_task(self._worker(i), name=f"training-worker-{i}") for i in range(self.workers)
        ]
        self._wakeup.set()

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the workers. A running training saves a checkpoint after its current step and
        stops; its job stays 'running' in the registry, so the next start resumes it."""
        threads = [running.thread for running in self.running.values() if running.thread is not None]
        for running in self.running.values():
            running.interrupt.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if threads:  # wait for the checkpoint, so the next process finds it complete
            done, _ = await asyncio.wait([asyncio.wrap_future(t) for t in threads], timeout=timeout)
            for future in done:
                future.exception()  # a stopped training ends by raising: expected, nothing to report

    def notify(self) -> None:
        """A job was queued: wake an idle worker."""
        self._wakeup.set()

    async def submit(self, job: JobRecord) -> None:
        """A job was stored: train it (here, by waking an idle worker thread)."""
        self.notify()

    async def cancel(self, job_id: int) -> bool:
        """Ask a running job to stop after its current step; False when it does not run here."""
        return self.cancel_running(job_id)

    def cancel_running(self, job_id: int) -> bool:
        running = self.running.get(job_id)
        if running is None:
            return False
        running.cancel.set()
        return True

    def resume_step(self, job_id: int) -> int | None:
        """The step a job found interrupted at start-up resumes from (None: it starts over)."""
        return self._resume_steps.get(job_id)

    def progress_of(self, job_id: int) -> TrainProgress | None:
        running = self.running.get(job_id)
        return running.progress if running else None

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no job is queued or running (tests and the CLI)."""

        async def idle() -> None:
            while True:
                if await self.jobs.active_count() == 0 and not self.running:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(idle(), timeout)

    # -- internals --------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while True:
            job = await self.jobs.claim_next()
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._run(job)

    async def _run(self, job: JobRecord) -> None:
        run = self.running[job.id] = RunHandle(job=job)
        log.info("Training job %s started: guild %s, handle %s", job.id, job.guild_id, job.handle)
        model = None
        try:
            ended = await self._train(run)
            if ended.state == "interrupted":
                return  # shutting down: the job stays 'running' and resumes at the next start
            if ended.state == "done":
                model = await publish_version(self.storage, self.store, ended.model, self.versions_kept)
                if not job.continues:  # an update keeps whose data the persona holds
                    sources = [job.source_user_id] if job.source_user_id else []
                    await self.models.set_sources(job.guild_id, job.handle, sources)
        except asyncio.CancelledError:
            raise  # shutting down: the job stays 'running' and is re-queued at the next start
        except Exception as exc:  # the registry failed us: fail the job, keep the worker alive
            log.exception("Training job %s failed", job.id)
            ended = Settled("failed", error=f"Training failed unexpectedly ({exc.__class__.__name__}).")
        finally:
            self.running.pop(job.id, None)
        await self.jobs.finish(job.id, ended.state, ended.error)
        await asyncio.to_thread(self.store.drop_checkpoint, job.id)  # it ended: nothing to resume
        log.info("Training job %s ended: %s", job.id, ended.state)
        outcome = JobOutcome(job=job, state=ended.state, error=ended.error, model=model)
        await self._dispatch("training_finished", outcome)

    async def _train(self, run: RunHandle) -> Settled:
        job = run.job
        corpus = await self.jobs.corpus(job.id)
        config = replace(self.make_config(job), checkpoint_dir=str(self.store.checkpoint_dir(job.id)))
        try:
            run.version, start_from = await starting_point(self.storage, self.store, job)
        except TrainingError as exc:
            return Settled("failed", error=str(exc))
        config = replace(config, start_from=start_from)
        progress = progress_to_loop(self._loop, self._on_progress, run)
        run.thread = self.executor.submit(
            train_and_publish, self.store, run, corpus, config, progress, self.train_fn, self.report
        )
        return await settle(run)

    def _on_progress(self, running: RunHandle, progress: TrainProgress) -> None:
        running.progress = progress
        now = time.monotonic()
        if now - running.last_saved >= PROGRESS_SAVE_INTERVAL or progress.phase != "training":
            running.last_saved = now
            asyncio.ensure_future(self.jobs.update_progress(running.job.id, progress.as_dict()))
        asyncio.ensure_future(self._dispatch("training_progress", running.job, progress))

    async def _dispatch(self, event: str, *args: Any) -> None:
        await dispatch_event(self.emit, event, *args)
