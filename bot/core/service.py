"""The Discord-free core in one object: registry, model store, training queue and generator.

Both the Discord bot and the CLI drive this class, so they share one behaviour: the same
validation, the same guild scoping, the same files.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import UserError
from .generation import GenerationError, Generator, Sampling
from .jobs import TrainingQueue
from .registry import JobRecord, ModelRecord, Registry, RegistryError, clean_display_name, normalize_handle
from .store import ModelStore
from .training import TrainConfig

log = logging.getLogger(__name__)

MAX_TWEETS_PER_REQUEST = 10
MAX_PROMPT_CHARS = 200
MAX_QUEUED_JOBS_PER_GUILD = 3


class Tweetalike:
    def __init__(self, settings):
        self.settings = settings
        self.store = ModelStore(settings.models_dir)
        self.registry: Registry | None = None
        self.queue: TrainingQueue | None = None
        # Separate pools: a 20-minute training never delays an /impersonate.
        self.train_executor = ThreadPoolExecutor(settings.training_workers, thread_name_prefix="train")
        self.generate_executor = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self.generator = Generator(
            Sampling(
                top_p=settings.generation_top_p,
                temperature=settings.generation_temperature,
                max_new_tokens=settings.generation_max_new_tokens,
                min_new_tokens=settings.generation_min_new_tokens,
            ),
            cache_size=settings.model_cache_size,
        )

    async def start(self, *, run_queue: bool = True) -> None:
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        await asyncio.to_thread(self.store.recover)
        self.registry = await Registry.open(self.settings.database_path)
        self.queue = TrainingQueue(
            self.registry, self.store, self.train_executor, self.train_config,
            workers=self.settings.training_workers,
        )
        if run_queue:
            await self.queue.start()

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.stop()
        self.train_executor.shutdown(wait=False, cancel_futures=True)
        self.generate_executor.shutdown(wait=False, cancel_futures=True)
        if self.registry is not None:
            await self.registry.close()

    def train_config(self, job: JobRecord) -> TrainConfig:
        s = self.settings
        return TrainConfig(
            base_model=job.base_model, method=job.method, epochs=job.epochs,
            batch_size=s.train_batch_size, block_size=s.train_block_size,
            learning_rate=s.train_learning_rate, lora_rank=s.lora_rank, lora_alpha=2 * s.lora_rank,
            seed=s.train_seed, max_steps=s.train_max_steps,
        )

    # -- training -----------------------------------------------------------------------------

    async def submit_training(
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
    ) -> JobRecord:
        handle = normalize_handle(handle)
        method = (method or self.settings.train_method).lower()
        if method not in ("lora", "full"):
            raise UserError("The method must be `lora` or `full`.")
        epochs = epochs or self.settings.train_epochs
        if not 1 <= epochs <= 20:
            raise UserError("Epochs must be between 1 and 20.")
        if avatar_url and not avatar_url.startswith(("https://", "http://")):
            raise UserError("The avatar must be an http(s) image URL.")
        await self.ensure_can_queue(guild_id, handle)
        job = await self.registry.create_job(
            guild_id=guild_id, handle=handle, display_name=clean_display_name(display_name, handle),
            avatar_url=avatar_url, base_model=base_model or self.settings.base_model, method=method,
            epochs=epochs, corpus=tweets, stats=stats, requested_by=requested_by, channel_id=channel_id,
        )
        self.queue.notify()
        return job

    async def ensure_can_queue(self, guild_id: int, handle: str) -> None:
        """Refuse early (before a download) what submit_training would refuse."""
        if await self.registry.active_job_for_handle(guild_id, handle):
            raise UserError(f"`{handle}` is already queued or training here; wait for it or cancel it first.")
        active = await self.registry.list_jobs(guild_id, active_only=True)
        if len(active) >= MAX_QUEUED_JOBS_PER_GUILD:
            raise UserError(
                f"This server already has {len(active)} trainings queued; wait for one to finish."
            )

    async def cancel_job(self, guild_id: int, job_id: int) -> str:
        job = await self.registry.get_job(guild_id, job_id)
        if job is None:
            raise UserError(f"There is no training job #{job_id} in this server.")
        if job.state == "running" and self.queue.cancel_running(job_id):
            return "cancelling"
        if job.state == "queued" and await self.registry.cancel_queued_job(guild_id, job_id):
            return "cancelled"
        raise UserError(f"Job #{job_id} is already {job.state}.")

    # -- models -------------------------------------------------------------------------------

    async def get_model(self, guild_id: int, handle: str) -> ModelRecord:
        handle = normalize_handle(handle)
        model = await self.registry.get_model(guild_id, handle)
        if model is not None and model.status == "ready":
            return model
        job = await self.registry.active_job_for_handle(guild_id, handle)
        if job is not None:
            raise UserError(f"`{handle}` is still training (job #{job.id}, {job.state}); try again when it is done.")
        if model is not None:
            raise UserError(f"`{handle}` is {model.status} and cannot be used.")
        raise RegistryError(f"There is no model called `{handle}` in this server. See `/models list`.")

    def model_location(self, model: ModelRecord) -> str:
        """A folder for trained models; imported models may name a hub id instead."""
        if model.method == "imported" and not Path(model.path).is_absolute() and not (self.store.root / model.path).exists():
            return model.path
        return str(self.store.resolve(model.path))

    async def generate(self, guild_id: int, handle: str, prompt: str = "", n: int = 5) -> tuple[ModelRecord, list[str]]:
        if not 1 <= n <= MAX_TWEETS_PER_REQUEST:
            raise UserError(f"Ask for between 1 and {MAX_TWEETS_PER_REQUEST} tweets.")
        prompt = " ".join((prompt or "").split())
        if len(prompt) > MAX_PROMPT_CHARS:
            raise UserError(f"The prompt is too long ({len(prompt)} characters; at most {MAX_PROMPT_CHARS}).")
        model = await self.get_model(guild_id, handle)
        location = self.model_location(model)
        try:
            tweets = await asyncio.get_running_loop().run_in_executor(
                self.generate_executor, self.generator.generate, location, prompt, n
            )
        except GenerationError as exc:
            raise UserError(str(exc)) from exc
        return model, tweets

    async def list_models(self, guild_id: int) -> list[ModelRecord]:
        return await self.registry.list_models(guild_id)

    async def delete_model(self, guild_id: int, handle: str) -> ModelRecord:
        handle = normalize_handle(handle)
        model = await self.registry.delete_model(guild_id, handle)
        if model is None:
            raise RegistryError(f"There is no model called `{handle}` in this server.")
        if model.method != "imported" or (self.store.root / model.path).exists():
            location = self.store.resolve(model.path)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.generate_executor, self.generator.forget, str(location))
            await asyncio.to_thread(self.store.remove, guild_id, handle)  # not behind a training
        return model
