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
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from typing import Any

from .checkpoint import checkpoint_step
from .modelcard import render_card
from .plots import loss_curve_png
from .safety import save_index
from .storage import JobRecord, ModelRecord, Storage
from .store import ModelStore, StoreError
from .training import TrainConfig, TrainingCancelled, TrainingError, TrainProgress, TrainResult, train

log = logging.getLogger(__name__)

LOSS_CURVE_FILE = "loss_curve.png"
PROGRESS_SAVE_INTERVAL = 5.0  # seconds between progress writes to the database
STOP_TIMEOUT = 120.0  # longest wait at shutdown for a training step to end and checkpoint


@dataclass
class JobOutcome:
    job: JobRecord
    state: str  # done | failed | cancelled
    error: str | None = None
    model: ModelRecord | None = None


@dataclass
class _Running:
    job: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    interrupt: threading.Event = field(default_factory=threading.Event)  # shutdown: checkpoint, then stop
    thread: Future | None = None  # the training in the executor
    progress: TrainProgress | None = None
    last_saved: float = 0.0
    lost: bool = False  # a worker's job was taken over by another: stop without publishing


EventSink = Callable[..., Awaitable[None] | None]  # (event name, *arguments)


class TrainingQueue:
    def __init__(
        self,
        storage: Storage,
        store: ModelStore,
        executor: Executor,
        make_config: Callable[[JobRecord], TrainConfig],
        *,
        workers: int = 1,
        train_fn: Callable[..., TrainResult] = train,
    ):
        self.jobs = storage.jobs
        self.models = storage.models
        self.store = store
        self.executor = executor
        self.make_config = make_config
        self.workers = workers
        self.train_fn = train_fn
        self.running: dict[int, _Running] = {}
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
        running = self.running[job.id] = _Running(job=job)
        log.info("Training job %s started: guild %s, handle %s", job.id, job.guild_id, job.handle)
        try:
            corpus = await self.jobs.corpus(job.id)
            config = replace(self.make_config(job), checkpoint_dir=str(self.store.checkpoint_dir(job.id)))
            running.thread = self.executor.submit(self.train_and_publish, job, corpus, config, running)
            model = await asyncio.wrap_future(running.thread)
            model = await self.models.save(model)
            await self.models.set_sources(
                job.guild_id, job.handle, [job.source_user_id] if job.source_user_id else []
            )
            await self.jobs.finish(job.id, "done")
            outcome = JobOutcome(job=job, state="done", model=model)
        except TrainingCancelled:
            await self.jobs.finish(job.id, "cancelled")
            outcome = JobOutcome(job=job, state="cancelled")
        except (TrainingError, StoreError) as exc:
            await self.jobs.finish(job.id, "failed", str(exc))
            outcome = JobOutcome(job=job, state="failed", error=str(exc))
        except asyncio.CancelledError:
            raise  # shutting down: the job stays 'running' and is re-queued at the next start
        except Exception as exc:  # a bug or an unexpected library error: keep the worker alive
            log.exception("Training job %s failed", job.id)
            message = f"Training failed unexpectedly ({exc.__class__.__name__})."
            await self.jobs.finish(job.id, "failed", message)
            outcome = JobOutcome(job=job, state="failed", error=message)
        finally:
            self.running.pop(job.id, None)
        await asyncio.to_thread(self.store.drop_checkpoint, job.id)  # it ended: nothing to resume
        log.info("Training job %s ended: %s", job.id, outcome.state)
        await self._dispatch("training_finished", outcome)

    def train_and_publish(
        self, job: JobRecord, corpus: list[str], config: TrainConfig, running: _Running
    ) -> ModelRecord:
        """Runs in the executor thread: train into a staging folder, add the card, move into place."""
        staging = self.store.new_staging_dir(job.guild_id, job.handle)
        try:
            result = self.train_fn(
                corpus,
                staging,
                config,
                progress=lambda p: self._from_thread(running, p),
                cancel=running.cancel,
                interrupt=running.interrupt,
            )
            try:
                (staging / "README.md").write_text(
                    render_card(
                        handle=job.handle,
                        display_name=job.display_name,
                        base_model=config.base_model,
                        method=config.method,
                        stats=job.stats,
                        config=result.config,
                        metrics=result.metrics,
                        avatar_url=job.avatar_url,
                    ),
                    encoding="utf-8",
                )
                (staging / LOSS_CURVE_FILE).write_bytes(loss_curve_png(result.history, f"@{job.handle}"))
                save_index(corpus, staging)
            except OSError as exc:
                raise StoreError(f"Cannot write the model card ({exc.strerror}).") from exc
            final = self.store.publish(staging, job.guild_id, job.handle)
        except OSError as exc:  # disk full while saving weights, read-only store...
            raise StoreError(f"Could not save the model: {exc.strerror or exc}.") from exc
        finally:
            self.store.discard(staging)  # no-op once published
        model = ModelRecord(
            guild_id=job.guild_id,
            handle=job.handle,
            display_name=job.display_name,
            avatar_url=job.avatar_url,
            base_model=config.base_model,
            method=config.method,
            path=self.store.relative(final),
            stats=job.stats,
            metrics=result.metrics | {"history": _thin_history(result.history)},
            created_by=job.requested_by,
        )
        return model

    def _from_thread(self, running: _Running, progress: TrainProgress) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_progress, running, progress)
        except RuntimeError:  # the loop is closed: shutting down, the step still ends cleanly
            pass

    def _on_progress(self, running: _Running, progress: TrainProgress) -> None:
        running.progress = progress
        now = time.monotonic()
        if now - running.last_saved >= PROGRESS_SAVE_INTERVAL or progress.phase != "training":
            running.last_saved = now
            asyncio.ensure_future(self.jobs.update_progress(running.job.id, progress.as_dict()))
        asyncio.ensure_future(self._dispatch("training_progress", running.job, progress))

    async def _dispatch(self, event: str, *args: Any) -> None:
        await dispatch_event(self.emit, event, *args)


async def dispatch_event(emit: EventSink | None, event: str, *args: Any) -> None:
    """Hand an event to the sink (bot.dispatch, the CLI's printer); a failing sink is only logged."""
    if emit is None:
        return
    try:
        result = emit(event, *args)
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        log.exception("The %s event sink failed", event)


def _thin_history(history: list[dict[str, Any]], limit: int = 400) -> list[dict[str, Any]]:
    """Keep the loss curve small enough for the registry: every validation point, sampled steps."""
    train_points = [h for h in history if "train_loss" in h]
    stride = max(1, len(train_points) // limit)
    kept = train_points[::stride]
    if train_points and kept[-1] is not train_points[-1]:
        kept.append(train_points[-1])
    return sorted(kept + [h for h in history if "val_loss" in h], key=lambda h: h["step"])
