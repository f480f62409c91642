"""One training run, as the in-process queue (jobs.py) and a worker (worker.py) both do it.

    train_config(settings, job)          how a job is trained, from the training process's settings
    report_plan(settings)                how its voice report is made (voicereport.py)
    train_and_publish(store, run, ...)   in the executor: train into staging, report, card, publish
    settle(run)                          await the run and sort its ending into done/failed/...

What differs between the two is only where the job comes from and where the result goes (the
registry here, the database under a worker's token there), so each backend keeps just that part.
Both implement `TrainingBackend`, the interface the service and the cogs see; the remote side of
the worker (remote_queue.WorkerQueue) implements it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bot.core.errors import TrainingError
from bot.core.generation.decoding import sampling_from
from bot.core.generation.safety import save_index
from bot.core.personas.keptposts import keep_posts, kept_posts
from bot.core.personas.modelcard import render_card
from bot.core.personas.modelstore import BASES, ModelStore, StoreError
from bot.core.personas.versions import local_folder, next_version
from bot.core.storage import JobRecord, ModelRecord
from bot.core.training.bases import describe, loadable
from bot.core.training.loop import TRAINING_INFO_FILE, train
from bot.core.training.plots import loss_curve_png
from bot.core.training.recipe import (
    TrainConfig,
    TrainingCancelled,
    TrainingInterrupted,
    TrainProgress,
    TrainResult,
)
from bot.core.training.update import plan_update
from bot.core.training.voicereport import ReportPlan, report_line, voice_report

log = logging.getLogger(__name__)

LOSS_CURVE_FILE = "loss_curve.png"

EventSink = Callable[..., Awaitable[None] | None]  # (event name, *arguments)


class TrainingBackend(Protocol):
    """Where trainings run: in this process (jobs.TrainingQueue) or on workers (WorkerQueue)."""

    emit: EventSink | None
    recovered: list[JobRecord]

    async def start(self) -> None: ...
    async def stop(self, timeout: float | None = None) -> None: ...
    async def submit(self, job: JobRecord) -> None: ...
    async def cancel(self, job_id: int) -> bool: ...
    def notify(self) -> None: ...
    def resume_step(self, job_id: int) -> int | None: ...
    def progress_of(self, job_id: int) -> TrainProgress | None: ...
    async def wait_idle(self, timeout: float | None = None) -> None: ...


@dataclass
class RunHandle:
    """One job while it trains: the events that stop it, its thread and its latest progress."""

    job: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    interrupt: threading.Event = field(default_factory=threading.Event)  # shutdown: checkpoint, then stop
    thread: Future | None = None  # the training in the executor
    progress: TrainProgress | None = None
    last_saved: float = 0.0
    lost: bool = False  # a worker's job was taken over by another: stop without publishing
    version: int = 1  # the persona version this run publishes (personas/versions.py)


@dataclass
class JobOutcome:
    """What `training_finished` carries: how a job ended, and the persona when it is done."""

    job: JobRecord
    state: str  # done | failed | cancelled
    error: str | None = None
    model: ModelRecord | None = None


@dataclass
class Settled:
    state: str  # done | failed | cancelled | interrupted (shutdown: the job resumes later)
    model: ModelRecord | None = None
    error: str | None = None


def train_config(settings, job: JobRecord) -> TrainConfig:
    """How a job is trained, from the settings of the process that trains it."""
    s = settings
    return TrainConfig(
        base_model=job.base_model,
        method=job.method,
        epochs=job.epochs,
        patience=s.train_patience,
        batch_size=s.train_batch_size,
        block_size=s.train_block_size,
        learning_rate=s.train_learning_rate,
        lora_rank=s.lora_rank,
        lora_token_rows=s.lora_token_rows,
        token_rows_learning_rate=s.train_token_rows_learning_rate,
        seed=s.train_seed,
        max_steps=s.train_max_steps,
        checkpoint_seconds=s.train_checkpoint_seconds,
        bases_dir=str(s.models_path / BASES),
    )


def report_plan(settings) -> ReportPlan | None:
    """The voice report's posts and sampling (those of /impersonate); None when it is switched off."""
    if not settings.voice_report_posts:
        return None
    return ReportPlan(
        posts=settings.voice_report_posts,
        sampling=sampling_from(settings),
        cache_dir=str(settings.models_path / BASES / "voice"),
    )


async def starting_point(storage, store: ModelStore, job: JobRecord) -> tuple[int, str | None]:
    """The version a job publishes and, for an update, the folder of the version it continues
    (unpacked here first when a worker trained it); a TrainingError when that version is gone."""
    current = await storage.models.get(job.guild_id, job.handle)
    if not job.continues:
        return next_version(current), None
    if current is None or current.version != job.continues:
        now = f"it is {current.version_label} now" if current else "it was deleted"
        raise TrainingError(
            f"`{job.handle}` changed since this update was queued ({now}, the update continues "
            f"v{job.continues}); queue the update again."
        )
    folder = await local_folder(storage, store, current)
    return next_version(current), str(folder)


async def settle(run: RunHandle) -> Settled:
    """Wait for a run's thread and say how it ended; a bug fails the job, never the backend."""
    try:
        model = await asyncio.wrap_future(run.thread)
    except TrainingInterrupted:
        return Settled("interrupted")
    except TrainingCancelled:
        return Settled("cancelled")
    except (TrainingError, StoreError) as exc:
        return Settled("failed", error=str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug or an unexpected library error
        log.exception("Training job %s failed", run.job.id)
        return Settled("failed", error=f"Training failed unexpectedly ({exc.__class__.__name__}).")
    return Settled("done", model=model)


def progress_to_loop(
    loop: asyncio.AbstractEventLoop, handler: Callable[[RunHandle, TrainProgress], None], run: RunHandle
) -> Callable[[TrainProgress], None]:
    """The training thread's progress callback: hands each report to `handler` on the event loop."""

    def report(progress: TrainProgress) -> None:
        try:
            loop.call_soon_threadsafe(handler, run, progress)
        except RuntimeError:  # the loop is closed: shutting down, the step still ends cleanly
            pass

    return report


def train_and_publish(
    store: ModelStore,
    run: RunHandle,
    corpus: list[str],
    config: TrainConfig,
    progress: Callable[[TrainProgress], None],
    train_fn: Callable[..., TrainResult] = train,
    report: ReportPlan | None = None,
) -> ModelRecord:
    """Runs in the executor thread: train into a staging folder, add the voice report and the card,
    move into place."""
    job = run.job
    staging = store.new_staging_dir(job.guild_id, job.handle)
    try:
        stop = {"progress": progress, "cancel": run.cancel, "interrupt": run.interrupt}
        if config.start_from:  # an update: the new posts, a replay of the old, the old held out
            result, corpus = _train_update(train_fn, corpus, staging, config, stop, job.continues)
        else:
            result = train_fn(corpus, staging, config, **stop)
        result.metrics["version"] = run.version
        _write_extras(staging, job, result, corpus)
        if report is not None and result.held_out_posts:
            result.metrics["voice_report"] = _report(staging, config, result, report)
        _write_card(staging, job, config, result)
        final = store.publish(staging, job.guild_id, job.handle, run.version)
    except OSError as exc:  # disk full while saving weights, read-only store...
        raise StoreError(f"Could not save the model: {exc.strerror or exc}.") from exc
    finally:
        store.discard(staging)  # no-op once published
    return ModelRecord(
        guild_id=job.guild_id,
        handle=job.handle,
        display_name=job.display_name,
        avatar_url=job.avatar_url,
        base_model=describe(config.base_model),
        method=config.method,
        path=store.relative(final),
        stats=job.stats,
        metrics=result.metrics | {"history": _thin_history(result.history)},
        created_by=job.requested_by,
        version=run.version,
    )


def _train_update(train_fn, new_posts, staging, config: TrainConfig, stop, continues: int | None):
    """Train an update from the persona at `config.start_from` (see update.py); returns the result,
    with the new version's whole training set as its training posts, and every post it has seen."""
    kept = kept_posts(Path(config.start_from))
    if kept is None:
        raise TrainingError("The persona's kept posts are missing, so it cannot be updated; train it anew.")
    plan = plan_update(kept, new_posts, config.val_fraction, config.seed)
    result = train_fn(plan.train, staging, config, held_out=plan.held_out, watch=plan.old_held_out, **stop)
    before = _parent_metrics(config.start_from).get("val_loss")
    result.metrics |= {
        "continued_from": continues,
        "new_posts": plan.new_posts,
        "replayed_posts": plan.replayed,
        "old_held_out_loss_before": before,
    }
    result.train_posts = plan.all_train
    return result, plan.all_train + plan.held_out


def _parent_metrics(folder: str) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / TRAINING_INFO_FILE).read_text())["metrics"]
    except (OSError, ValueError, KeyError):
        return {}


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


def _report(staging, config: TrainConfig, result: TrainResult, plan: ReportPlan) -> dict[str, Any] | None:
    """The voice report; one that cannot be made (a bug, a library failing) costs only itself."""
    started = time.monotonic()
    try:
        base = loadable(config.base_model, config.bases_dir)
        split = (result.train_posts, result.held_out_posts)
        report = voice_report(staging, base, split, result.metrics, plan)
    except (TrainingError, OSError, RuntimeError, ValueError) as exc:
        log.warning("No voice report for this persona: %s", exc, exc_info=True)
        return None
    report["seconds"] = round(time.monotonic() - started, 1)
    log.info("Voice report in %.1fs: %s", report["seconds"], report_line(report))
    return report


def _write_extras(staging, job: JobRecord, result: TrainResult, corpus: list[str]) -> None:
    """The loss curve, the anti-recitation index (the report's posts pass it, as users' do) and the
    posts, split as trained, beside the weights."""
    try:
        (staging / LOSS_CURVE_FILE).write_bytes(loss_curve_png(result.history, f"@{job.handle}"))
        save_index(corpus, staging)
        if result.held_out_posts:
            keep_posts(staging, result.train_posts, result.held_out_posts)
    except OSError as exc:
        raise StoreError(f"Cannot write the model's files ({exc.strerror}).") from exc


def _write_card(staging, job: JobRecord, config: TrainConfig, result: TrainResult) -> None:
    try:
        card = render_card(
            handle=job.handle,
            display_name=job.display_name,
            base_model=describe(config.base_model),
            method=config.method,
            stats=job.stats,
            config=result.config,
            metrics=result.metrics,
            avatar_url=job.avatar_url,
        )
        (staging / "README.md").write_text(card, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"Cannot write the model card ({exc.strerror}).") from exc


def _thin_history(history: list[dict[str, Any]], limit: int = 400) -> list[dict[str, Any]]:
    """Keep the loss curve small enough for the registry: every validation point, sampled steps."""
    train_points = [h for h in history if "train_loss" in h]
    stride = max(1, len(train_points) // limit)
    kept = train_points[::stride]
    if train_points and kept[-1] is not train_points[-1]:
        kept.append(train_points[-1])
    return sorted(kept + [h for h in history if "val_loss" in h], key=lambda h: h["step"])
