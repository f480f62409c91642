"""Trainings (`service.trainings`): queue a persona's training, see and cancel this server's jobs.

Every check of a training request is here, once: the handle, the method, the epochs, the avatar,
and whether the server may queue another (before a download too: `check_can_queue`). Where the
training runs (this process or workers) is the service's `TrainingBackend`, see trainrun.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.core.errors import UserError
from bot.core.handles import clean_display_name, normalize_handle
from bot.core.limits import MAX_EPOCHS, MAX_QUEUED_JOBS_PER_GUILD
from bot.core.personas.keptposts import kept_posts
from bot.core.personas.modelcard import gguf_label_parts
from bot.core.storage import JobRecord
from bot.core.training.bases import check_base, describe
from bot.core.training.recipe import TrainConfig, TrainProgress, default_epochs
from bot.core.training.update import UpdatePlan, merged_stats, new_posts_of, plan_update
from bot.core.urls import normalize_http_url


class Trainings:
    def __init__(self, service):
        self.service = service

    async def submit(
        self,
        *,
        guild_id: int,
        handle: str,
        tweets: list[str],
        stats: dict[str, Any],
        display_name: str | None = None,
        avatar_url: str | None = None,
        method: str | None = None,
        epochs: int | None = None,
        base_model: str | None = None,
        requested_by: int | None = None,
        channel_id: int | None = None,
        source_user_id: int | None = None,
    ) -> JobRecord:
        handle = normalize_handle(handle)
        method = (method or self.service.settings.train_method).lower()
        if method not in ("lora", "full"):
            raise UserError("The method must be `lora` or `full`.")
        epochs = epochs or self.service.settings.train_epochs or default_epochs(method, len(tweets))
        if not 1 <= epochs <= MAX_EPOCHS:
            raise UserError(f"Epochs must be between 1 and {MAX_EPOCHS}.")
        avatar_url = normalize_http_url(avatar_url, what="The avatar URL") if avatar_url else None
        # A .gguf base is read here, so a file transformers cannot take is refused before queueing.
        base_model = await asyncio.to_thread(check_base, base_model or self.service.settings.base_model)
        await self.check_can_queue(guild_id, handle)
        job = await self.service.storage.jobs.create(
            guild_id=guild_id,
            handle=handle,
            display_name=clean_display_name(display_name, handle),
            avatar_url=avatar_url,
            base_model=base_model,
            method=method,
            epochs=epochs,
            corpus=tweets,
            stats=stats,
            requested_by=requested_by,
            channel_id=channel_id,
            source_user_id=source_user_id,
        )
        await self.service.queue.submit(job)
        return job

    async def update(
        self,
        *,
        guild_id: int,
        handle: str,
        tweets: list[str],
        stats: dict[str, Any],
        requested_by: int | None = None,
        channel_id: int | None = None,
    ) -> tuple[JobRecord, UpdatePlan]:
        """Queue an update: the persona goes on training from its current version on the posts it
        has not seen (update.py). Refused, with nothing queued, when the persona is not ready, was
        imported, kept no posts, or none of the posts is new."""
        service = self.service
        model = await service.get_model(guild_id, handle)
        if model.method not in ("lora", "full"):
            raise UserError(f"`{model.handle}` was imported, not trained here, so it cannot be updated.")
        if await service.storage.models.sources(guild_id, model.handle):
            raise UserError(
                f"`{model.handle}` is a member's own voice: only they can train it, with `/voice train`."
            )
        await self.check_can_queue(guild_id, model.handle)
        folder = service.store.resolve(model.path)
        await service.local_copy(model)
        kept = await asyncio.to_thread(kept_posts, folder)
        if kept is None:
            raise UserError(
                f"`{model.handle}` was trained before the bot kept a persona's posts, so it cannot be "
                "continued: train it again with `/train new` (the old version is kept for rollback)."
            )
        # The split the training makes again from the same posts (trainrun._train_update).
        seed, val_fraction = service.settings.train_seed, TrainConfig.val_fraction
        plan = plan_update(kept, tweets, val_fraction, seed, model.handle)
        base_model = await asyncio.to_thread(check_base, await self._base_of(model))
        job = await service.storage.jobs.create(
            guild_id=guild_id,
            handle=model.handle,
            display_name=model.display_name,
            avatar_url=model.avatar_url,
            base_model=base_model,
            method=model.method,
            epochs=service.settings.train_epochs
            or default_epochs(model.method, len(plan.train) + len(plan.held_out)),
            corpus=new_posts_of(kept, tweets, model.handle),
            stats=merged_stats(model.stats, stats, plan),
            requested_by=requested_by,
            channel_id=channel_id,
            continues=model.version,
        )
        await service.queue.submit(job)
        return job, plan

    async def _base_of(self, model) -> str:
        """What the update loads as its base: the persona's own (a hub id or folder), or the bot's
        BASE_MODEL when that is the GGUF file it was trained on (a GGUF is recorded by name and hash)."""
        configured = self.service.settings.base_model
        if await asyncio.to_thread(describe, configured) == model.base_model:
            return configured
        if gguf_label_parts(model.base_model):
            raise UserError(
                f"`{model.handle}` was trained on {model.base_model}, which is not this bot's BASE_MODEL "
                "now: set BASE_MODEL to that file to update it."
            )
        return model.base_model

    async def check_can_queue(self, guild_id: int, handle: str) -> None:
        """Refuse early (before a download) what `submit` would refuse."""
        if await self.service.storage.jobs.active_for_handle(guild_id, handle):
            raise UserError(f"`{handle}` is already queued or training here; wait for it or cancel it first.")
        active = await self.service.storage.jobs.list(guild_id, active_only=True)
        if len(active) >= MAX_QUEUED_JOBS_PER_GUILD:
            raise UserError(
                f"This server already has {len(active)} trainings queued; wait for one to finish."
            )

    async def list(self, guild_id: int, *, active_only: bool = False, limit: int = 20) -> list[JobRecord]:
        return await self.service.storage.jobs.list(guild_id, active_only=active_only, limit=limit)

    async def get(self, guild_id: int, job_id: int) -> JobRecord | None:
        return await self.service.storage.jobs.get(guild_id, job_id)

    async def ahead(self, job_id: int) -> int:
        """How many jobs run or wait before this one (0 = it is next or running)."""
        return await self.service.storage.jobs.position(job_id)

    def progress(self, job_id: int) -> TrainProgress | None:
        """The live progress of a job this process is training (None when it is not running here)."""
        return self.service.queue.progress_of(job_id)

    def recovered(self) -> list[JobRecord]:
        """Jobs a previous process left running, queued again at start-up."""
        return list(self.service.queue.recovered)

    def resume_step(self, job_id: int) -> int | None:
        """The checkpoint step a recovered job resumes from (None: it starts over)."""
        return self.service.queue.resume_step(job_id)

    async def cancel(self, guild_id: int, job_id: int) -> str:
        job = await self.service.storage.jobs.get(guild_id, job_id)
        if job is None:
            raise UserError(f"There is no training job #{job_id} in this server.")
        if job.state == "running" and await self.service.queue.cancel(job_id):
            return "cancelling"
        if job.state == "queued" and await self.service.storage.jobs.cancel_queued(guild_id, job_id):
            return "cancelled"
        raise UserError(f"Job #{job_id} is already {job.state}.")

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no training is queued or running (the CLI and tests)."""
        await self.service.queue.wait_idle(timeout)
