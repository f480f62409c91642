"""A training worker: `python -m bot.worker` on any machine that can reach DATABASE_URL.

It runs a procrastinate worker on the `trainings` queue (storage/taskqueue.py). For each job it
takes the `training_jobs` row under a token of its own, trains with the same code as the
in-process queue (on CUDA when there is one, see devices.py), writes its progress into the row,
and publishes the persona: a LoRA persona as an archive in the database (the bot unpacks it on
first use, so bot and workers share no disk), a full fine-tune into MODELS_DIR, which must then
be a volume the bot reads too.

Faults. Every checkpoint of a LoRA training is copied into the database as soon as it is
written. A worker that dies (SIGKILL, power cut, lost network) stops sending procrastinate's
heartbeats; any live worker finds its job with procrastinate's `get_stalled_jobs`, retries it,
and the worker that takes it resumes from that checkpoint. A worker that only lost its job (it
was presumed dead, then came back) sees it at its next progress report ('lost') and stops
without publishing anything. SIGTERM checkpoints, hands the job back to the queue and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bot.core.errors import TrainingError, UserError
from bot.core.personas.modelstore import ModelStore, StoreError, pack, unpack_into
from bot.core.personas.versions import publish_version
from bot.core.storage import (
    JobRecord,
    ModelRecord,
    Storage,
    checkpoint_key,
    database_url,
    persona_key,
    taskqueue,
)
from bot.core.storage.schema import ACTIVE_STATES
from bot.core.training.checkpoint import checkpoint_step
from bot.core.training.recipe import TrainProgress
from bot.core.training.trainrun import (
    RunHandle,
    progress_to_loop,
    report_plan,
    settle,
    starting_point,
    train_and_publish,
    train_config,
)

log = logging.getLogger(__name__)

REPORT_SECONDS = 2.0  # least time between two progress writes of one training
STOP_TIMEOUT = 120.0


class TrainingWorker:
    """Takes jobs from the procrastinate queue and runs each as a `trainrun` run."""

    def __init__(self, settings, name: str | None = None):
        self.settings = settings
        self.voice_report_plan = report_plan(settings)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.url = database_url(settings.database_url, settings.database_path)
        if not self.url.startswith("postgresql"):
            raise UserError("A training worker needs DATABASE_URL=postgresql://... (the queue lives there).")
        self.store = ModelStore(settings.models_dir)
        self.executor = ThreadPoolExecutor(settings.training_workers, thread_name_prefix="train")
        self.storage: Storage | None = None
        self.app: Any = None
        self.queue_worker: Any = None  # procrastinate's worker loop, while it runs
        self.running: dict[int, RunHandle] = {}
        self.tokens: dict[int, str] = {}

    @property
    def heartbeat(self) -> float:
        return self.settings.worker_heartbeat_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Train jobs until `stop` is set; a lost database only pauses the work."""
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        self.storage = await _retrying(lambda: Storage.open(self.url), "open the database")
        self.app = taskqueue.training_app(self.url)
        self.app.task(name=taskqueue.TASK_NAME, queue=taskqueue.QUEUE)(self.train_job)
        await self.app.open_async()
        await _retrying(lambda: taskqueue.ensure_schema(self.app), "install the queue")
        reaper = asyncio.create_task(self._reap_stalled(), name="stalled-jobs")
        log.info("Training worker %s is ready (heartbeat every %ss)", self.name, self.heartbeat)
        try:
            await self._serve(stop)
        finally:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
            await self.app.close_async()
            await self.storage.close()
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, stop: asyncio.Event) -> None:
        """procrastinate's worker loop, started again whenever it stops on a database error."""
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            self.queue_worker = taskqueue.queue_worker(
                self.app,
                name=self.name,
                concurrency=self.settings.training_workers,
                install_signal_handlers=False,
                listen_notify=False,
                fetch_job_polling_interval=1.0,
                update_heartbeat_interval=self.heartbeat,
                stalled_worker_timeout=3 * self.heartbeat,
                shutdown_graceful_timeout=STOP_TIMEOUT,
            )
            loop_task = asyncio.create_task(self.queue_worker.run())
            await asyncio.wait({loop_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                for running in self.running.values():
                    running.interrupt.set()  # checkpoint after this step, then hand the job back
                loop_task.cancel()
                await asyncio.gather(loop_task, return_exceptions=True)
                return
            error = loop_task.exception() if not loop_task.cancelled() else None
            log.warning("The queue worker stopped (%r); starting it again", error)
            await asyncio.sleep(self.heartbeat)

    async def _reap_stalled(self) -> None:
        """Take back the jobs of dead workers; keep this one's running trainings alive."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                if self.running and self.queue_worker is not None:
                    await taskqueue.keep_alive(self.app, self.queue_worker)
                await taskqueue.retry_stalled(self.app, 3 * self.heartbeat)
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("Could not look for stalled trainings (%s)", exc.__class__.__name__)

    # -- one training --------------------------------------------------------------------------

    async def train_job(self, job_id: int) -> None:
        """The procrastinate task: take training #job_id, train it, publish it."""
        job = await self.storage.jobs.get_any(job_id)
        if job is None or job.state not in ACTIVE_STATES or job.cancel_requested:
            return
        step = await self._restore_checkpoint(job)
        token = f"{self.name}/{uuid.uuid4().hex[:8]}"
        taken = await self.storage.jobs.take(job_id, token, step)
        if taken is None:
            return
        log.info(
            "Training job %s (%s) taken by %s%s",
            job_id,
            taken.handle,
            self.name,
            f", resuming from step {step}" if step else "",
        )
        running = self.running[job_id] = RunHandle(job=taken)
        self.tokens[job_id] = token
        sync = asyncio.create_task(self._sync_checkpoints(taken)) if taken.method == "lora" else None
        try:
            await _persist(lambda: self._train(taken, token, running), f"finish job {job_id}")
        finally:
            self.running.pop(job_id, None)
            self.tokens.pop(job_id, None)
            if taken.method == "lora":  # the personas live in the database: no copy stays here
                await asyncio.to_thread(self.store.remove, taken.guild_id, taken.handle)
            if sync is not None:
                sync.cancel()
                await asyncio.gather(sync, return_exceptions=True)

    async def _train(self, job: JobRecord, token: str, running: RunHandle) -> None:
        if running.thread is None:  # not a retry of the writes below
            corpus = await self.storage.jobs.corpus(job.id)
            folder = str(self.store.checkpoint_dir(job.id))
            try:
                running.version, start_from = await starting_point(self.storage, self.store, job)
            except TrainingError as exc:
                await self.storage.jobs.finish_as(job.id, token, "failed", str(exc))
                return
            config = replace(train_config(self.settings, job), checkpoint_dir=folder, start_from=start_from)
            progress = progress_to_loop(asyncio.get_running_loop(), self._on_progress, running)
            running.thread = self.executor.submit(
                train_and_publish,
                self.store,
                running,
                corpus,
                config,
                progress,
                report=self.voice_report_plan,
            )
        ended = await settle(running)
        if ended.state == "interrupted":
            await self._hand_back(job, token, running)
            return
        if ended.state != "done":
            await self.storage.jobs.finish_as(job.id, token, ended.state, ended.error)
        elif not await self._publish(job, token, ended.model):
            return  # another worker owns the job now, and its checkpoint
        await self._forget_checkpoint(job)

    def _on_progress(self, running: RunHandle, progress: TrainProgress) -> None:
        running.progress = progress
        now = asyncio.get_running_loop().time()
        if now - running.last_saved >= REPORT_SECONDS or progress.phase != "training":
            running.last_saved = now
            asyncio.ensure_future(self.send_progress(running, progress))

    async def _publish(self, job: JobRecord, token: str, model: ModelRecord) -> bool:
        if await self.storage.jobs.report_progress(job.id, token, {"phase": "saving"}) == "lost":
            log.warning("Training job %s was taken over by another worker; not publishing", job.id)
            return False
        folder = self.store.resolve(model.path)
        if job.method == "lora":  # the persona travels through the database; this copy is not needed
            data = await asyncio.to_thread(pack, folder)
            key = persona_key(job.guild_id, job.handle, model.version)
            digest = await self.storage.blobs.put(key, data, job.guild_id)
            model = replace(model, metrics=model.metrics | {"bundle": digest})
        await publish_version(self.storage, self.store, model, self.settings.persona_versions_kept)
        if not job.continues:  # an update keeps whose data the persona holds
            await self.storage.models.set_sources(
                job.guild_id, job.handle, [job.source_user_id] if job.source_user_id else []
            )
        await self.storage.jobs.finish_as(job.id, token, "done")
        log.info("Training job %s done and published", job.id)
        return True

    async def _hand_back(self, job: JobRecord, token: str, running: RunHandle) -> None:
        """Shutdown (or the job was lost): keep the checkpoint for whoever takes the job next."""
        if running.lost:
            return
        if job.method == "lora":
            await self._upload_checkpoint(job)
        if await self.storage.jobs.hand_back(job.id, token):
            await taskqueue.defer_training(self.app, job.id)
            log.info(
                "Training job %s handed back to the queue at step %s",
                job.id,
                checkpoint_step(self.store.checkpoint_dir(job.id)),
            )

    async def send_progress(self, running: RunHandle, progress: TrainProgress) -> None:
        """Write a training's progress; act on a cancel request or on the job being lost."""
        job_id = running.job.id
        try:
            verdict = await self.storage.jobs.report_progress(job_id, self.tokens[job_id], progress.as_dict())
        except KeyError:
            return
        except Exception as exc:  # the database is away: the training goes on, the next report retries
            log.warning("Could not report the progress of job %s (%s)", job_id, exc.__class__.__name__)
            return
        if verdict == "cancel":
            running.cancel.set()
        elif verdict == "lost":
            log.warning("Training job %s was taken over by another worker; stopping here", job_id)
            running.lost = True
            running.interrupt.set()

    # -- checkpoints in the database (LoRA) ----------------------------------------------------

    async def _restore_checkpoint(self, job: JobRecord) -> int | None:
        """Bring the job's last checkpoint here; returns its step (None: the job starts over)."""
        folder = self.store.checkpoint_dir(job.id)
        if job.method == "lora":
            blob = await self.storage.blobs.get(checkpoint_key(job.id))
            await asyncio.to_thread(self.store.drop_checkpoint, job.id)
            if blob is not None:
                await asyncio.to_thread(unpack_into, blob[1], folder)
        return await asyncio.to_thread(checkpoint_step, folder)  # full: MODELS_DIR is the shared volume

    async def _sync_checkpoints(self, job: JobRecord) -> None:
        """Copy each new checkpoint into the database as soon as the training writes it."""
        uploaded = checkpoint_step(self.store.checkpoint_dir(job.id))
        while True:
            await asyncio.sleep(0.5)
            step = await asyncio.to_thread(checkpoint_step, self.store.checkpoint_dir(job.id))
            if step is not None and step != uploaded and await self._upload_checkpoint(job):
                uploaded = step

    async def _upload_checkpoint(self, job: JobRecord) -> bool:
        folder = self.store.checkpoint_dir(job.id)
        try:
            if checkpoint_step(folder) is None:
                return False
            data = await asyncio.to_thread(pack, folder)
            await self.storage.blobs.put(checkpoint_key(job.id), data, job.guild_id)
        except Exception as exc:  # a file replaced while read, the database away: next round
            log.warning("Could not copy the checkpoint of job %s (%s)", job.id, exc.__class__.__name__)
            return False
        log.info("Checkpoint of job %s at step %s is in the database", job.id, checkpoint_step(folder))
        return True

    async def _forget_checkpoint(self, job: JobRecord) -> None:
        await asyncio.to_thread(self.store.drop_checkpoint, job.id)
        try:
            await self.storage.blobs.delete(checkpoint_key(job.id))
        except Exception as exc:
            log.warning("Could not delete the checkpoint of job %s (%s)", job.id, exc.__class__.__name__)


async def _persist(make, what: str, attempts: int = 150, pause: float = 2.0):
    """Run `make()` until it succeeds: a training's result must reach the database even if the
    server restarts just then (each step of `make` is idempotent: it checks the job's owner)."""
    for attempt in range(attempts):
        try:
            return await make()
        except (asyncio.CancelledError, TrainingError, StoreError):
            raise
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            log.warning("Could not %s (%s); retrying", what, exc.__class__.__name__)
            await asyncio.sleep(pause)


async def _retrying(make, what: str, pause: float = 2.0):
    """Start-up against a database that may not be up yet (compose starts everything together)."""
    while True:
        try:
            return await make()
        except (OSError, ConnectionError) as exc:
            log.warning("Could not %s (%s); retrying", what, exc)
        except Exception as exc:
            if "connect" not in str(exc).lower():
                raise
            log.warning("Could not %s (%s); retrying", what, exc.__class__.__name__)
        await asyncio.sleep(pause)
