"""The Discord-free core in one object: registry, model store, training queue and generator.

Both the Discord bot and the CLI drive this class, so they share one behaviour: the same
validation, the same guild scoping, the same files.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import UserError
from .modelcard import parse_card
from .generation import GenerationError, GenerationRequest, Generator, Sampling
from .jobs import TrainingQueue
from .registry import JobRecord, ModelRecord, Registry, RegistryError, clean_display_name, normalize_handle
from .store import ModelStore, StoreError
from .training import TrainConfig

log = logging.getLogger(__name__)

MAX_TWEETS_PER_REQUEST = 10
MAX_PROMPT_CHARS = 200
MAX_QUEUED_JOBS_PER_GUILD = 3
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# What a causal-LM folder needs; anything else on the hub repo (TF/Flax weights...) is skipped.
IMPORT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "README.md"]


def check_request(prompt: str | None, n: int) -> str:
    """Validate a generation request; returns the prompt with its whitespace collapsed."""
    if not 1 <= n <= MAX_TWEETS_PER_REQUEST:
        raise UserError(f"Ask for between 1 and {MAX_TWEETS_PER_REQUEST} tweets.")
    prompt = " ".join((prompt or "").split())
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"The prompt is too long ({len(prompt)} characters; at most {MAX_PROMPT_CHARS}).")
    return prompt


def check_hub_id(repo: str) -> str:
    repo = (repo or "").strip()
    if not HUB_ID_RE.match(repo) or ".." in repo:
        raise UserError("Give a Hugging Face model id like `huggingtweets/js_thrill`.")
    return repo


class GenerationBatcher:
    """Requests that arrive while the generator is busy go together in its next batch.

    A lone request starts at once; under load, up to `max_batch` requests (several personas on
    one base included) share each forward pass instead of queueing one behind another.
    """

    def __init__(self, generator: Generator, executor, max_batch: int = 16):
        self.generator = generator
        self.executor = executor
        self.max_batch = max_batch
        self.pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self.draining = False

    async def submit(self, request: GenerationRequest) -> list[str]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        if not self.draining:
            self.draining = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(self.executor, self.generator.generate_batch, [r for r, _ in batch])
                except Exception:
                    # One bad model must not fail the others: answer each request on its own.
                    results = []
                    for request, _ in batch:
                        try:
                            results.append(await loop.run_in_executor(self.executor, self.generator.generate_batch, [request]))
                        except Exception as exc:  # noqa: PERF203 - rare path
                            results.append(exc)
                    results = [r[0] if isinstance(r, list) else r for r in results]
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.draining = False


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
        self.batcher = GenerationBatcher(self.generator, self.generate_executor)
        self._closed = False

    async def start(self, *, run_queue: bool = True) -> None:
        """Open the registry; with `run_queue`, also own the store: clean up after a crash and train.

        Without it (the CLI's list, generate, delete) this process leaves start-up clean-up and
        the queue to the one that runs them, the bot, which may be at work at the same time.
        """
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        if run_queue:
            try:
                await asyncio.to_thread(self.store.lock_maintenance)
            except StoreError as exc:
                raise UserError(str(exc)) from None
            await asyncio.to_thread(self.store.recover)
        self.registry = await Registry.open(self.settings.database_path)
        self.queue = TrainingQueue(
            self.registry, self.store, self.train_executor, self.train_config,
            workers=self.settings.training_workers,
        )
        if run_queue:
            await self.queue.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.queue is not None:
            await self.queue.stop()
        self.train_executor.shutdown(wait=False, cancel_futures=True)
        self.generate_executor.shutdown(wait=False, cancel_futures=True)
        if self.registry is not None:
            await self.registry.close()
        self.store.unlock_maintenance()

    def train_config(self, job: JobRecord) -> TrainConfig:
        s = self.settings
        return TrainConfig(
            base_model=job.base_model, method=job.method, epochs=job.epochs,
            batch_size=s.train_batch_size, block_size=s.train_block_size,
            learning_rate=s.train_learning_rate, lora_rank=s.lora_rank,
            seed=s.train_seed, max_steps=s.train_max_steps, checkpoint_seconds=s.train_checkpoint_seconds,
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
        source_user_id: int | None = None,
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
            source_user_id=source_user_id,
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
        return str(self.store.resolve(model.path))

    async def generate(self, guild_id: int, handle: str, prompt: str = "", n: int = 5) -> tuple[ModelRecord, list[str]]:
        prompt = check_request(prompt, n)
        model = await self.get_model(guild_id, handle)
        try:
            tweets = await self.batcher.submit(GenerationRequest(self.model_location(model), prompt, n))
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
        location = self.model_location(model)
        await asyncio.get_running_loop().run_in_executor(self.generate_executor, self.generator.forget, location)
        await asyncio.to_thread(self.store.remove, guild_id, handle)  # not behind a training
        return model

    # -- hub import and export ------------------------------------------------------------------

    async def import_model(self, guild_id: int, repo: str, handle: str | None = None,
                           created_by: int | None = None) -> ModelRecord:
        """Register an existing fine-tuned model (e.g. huggingtweets/js_thrill) without training.

        The files are copied into the store, so the persona keeps working offline and is
        deleted with it; the hub is only asked when HF_LOCAL_MIRROR has no copy.
        """
        repo = check_hub_id(repo)
        handle = normalize_handle(handle or repo.split("/", 1)[1].replace("-", "_"))
        if await self.registry.get_model(guild_id, handle):
            raise UserError(f"`{handle}` already exists here; delete it first or pick another handle.")
        await self.ensure_can_queue(guild_id, handle)
        staging = await asyncio.to_thread(self.store.new_staging_dir, guild_id, handle)
        try:
            await asyncio.to_thread(self._fetch_into, repo, staging)
            info = await asyncio.get_running_loop().run_in_executor(
                self.generate_executor, self._check_loadable, staging
            )
            final = await asyncio.to_thread(self.store.publish, staging, guild_id, handle)
        finally:
            await asyncio.to_thread(self.store.discard, staging)
        card = parse_card((final / "README.md").read_text(encoding="utf-8", errors="replace")) \
            if (final / "README.md").is_file() else parse_card("")
        model = ModelRecord(
            guild_id=guild_id, handle=handle,
            display_name=clean_display_name(card.display_name, handle),
            base_model=info.get("base_model") or card.base_model or repo, method="imported",
            path=self.store.relative(final), stats=card.stats,
            metrics={"source": repo, "adapter": info.get("adapter", False)}, created_by=created_by,
        )
        return await self.registry.save_model(model)

    def _fetch_into(self, repo: str, target: Path) -> None:
        mirror = Path(self.settings.hf_local_mirror) / repo if self.settings.hf_local_mirror else None
        if mirror is not None and mirror.is_dir():
            shutil.copytree(mirror, target, dirs_exist_ok=True)
            return
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            snapshot_download(repo_id=repo, local_dir=target, allow_patterns=IMPORT_PATTERNS)
        except RepositoryNotFoundError:
            raise UserError(f"There is no model `{repo}` on the Hugging Face hub (or it is private).") from None
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise UserError(f"Could not download `{repo}` from the Hugging Face hub ({exc.__class__.__name__}).") from None

    def _check_loadable(self, folder: Path) -> dict[str, Any]:
        """Refuse a folder that is not a text-generation model, before it is registered."""
        import json

        if (folder / "adapter_config.json").is_file():
            config = json.loads((folder / "adapter_config.json").read_text())
            return {"adapter": True, "base_model": config.get("base_model_name_or_path")}
        if not (folder / "config.json").is_file():
            raise UserError("That repository has no model in it (no config.json).")
        from transformers import AutoConfig, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(folder)
            AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise UserError(f"That repository is not a usable model ({exc.__class__.__name__}).") from None
        if not any(a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in config.architectures or []):
            raise UserError("That model is not a text-generation model (GPT-2 style).")
        return {"adapter": False, "base_model": getattr(config, "_name_or_path", None)}

    async def model_folder(self, guild_id: int, handle: str) -> tuple[ModelRecord, Path]:
        model = await self.get_model(guild_id, handle)
        return model, self.store.resolve(model.path)
