"""The Discord-free core behind one door: `PersonaService`.

The Discord cogs and the CLI touch the core only through its public methods, so they share one
behaviour: the same validation, the same guild scoping, the same files. Read its method list
top to bottom for a persona's whole life: train, generate, schedule, export, erase.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bot.core.conversation.chatter import Chatter
from bot.core.conversation.schedules import Scheduler
from bot.core.errors import UserError
from bot.core.generation.generator import GenerationError, GenerationRequest, Generator, Sampling
from bot.core.handles import RegistryError, clean_display_name, handle_for_hub_id, normalize_handle
from bot.core.ingest.download import UrlReader
from bot.core.limits import MAX_PROMPT_CHARS, MAX_TWEETS_PER_REQUEST
from bot.core.personas.modelcard import read_card
from bot.core.personas.modelstore import ModelStore, StoreError
from bot.core.personas.voices import Voices
from bot.core.storage import Guilds, ModelRecord, Storage, database_url, persona_key
from bot.core.training.local_queue import TrainingQueue
from bot.core.training.trainings import Trainings
from bot.core.training.trainrun import LOSS_CURVE_FILE, EventSink, TrainingBackend, train_config
from bot.core.urls import NO_AVATAR, normalize_http_url

log = logging.getLogger(__name__)

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
                    results = await loop.run_in_executor(
                        self.executor, self.generator.generate_batch, [r for r, _ in batch]
                    )
                except Exception:
                    # One bad model must not fail the others: answer each request on its own.
                    results = []
                    for request, _ in batch:
                        try:
                            results.append(
                                await loop.run_in_executor(
                                    self.executor, self.generator.generate_batch, [request]
                                )
                            )
                        except Exception as exc:  # noqa: PERF203 - rare path
                            results.append(exc)
                    results = [r[0] if isinstance(r, list) else r for r in results]
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.draining = False


def trainings_on_workers(backend: str, url: str) -> bool:
    """TRAINING_BACKEND: queue (workers, PostgreSQL only), local, or auto (workers on PostgreSQL)."""
    on_postgres = url.startswith("postgresql")
    if backend == "queue" and not on_postgres:
        raise UserError("TRAINING_BACKEND=queue needs DATABASE_URL=postgresql://... (the queue lives there).")
    return backend == "queue" or (backend == "auto" and on_postgres)


class PersonaService:
    """Everything the bot and the CLI may do, as methods; see the module docstring."""

    def __init__(self, settings, *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock  # schedules read time through this, so tests can move it
        self.store = ModelStore(settings.models_dir)
        self.storage: Storage | None = None
        self.queue: TrainingBackend | None = None
        self.schedules: Scheduler | None = None  # /autopost: service.schedules.add(...), .list(...)
        self._events: EventSink | None = None
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
            int8=None if settings.generation_int8 else False,
        )
        self.batcher = GenerationBatcher(self.generator, self.generate_executor)
        self.chatter = Chatter(self, clock=clock)  # personas in the conversation (conversation/chatter.py)
        self.downloads = UrlReader(settings)  # `url:` options and the CLI's --file given a link
        self.voices = Voices(self)  # members' personas of themselves (core/personas/voices.py)
        self._unpacking = asyncio.Lock()
        self.trainings = Trainings(self)  # /train: service.trainings.submit(...), .cancel(...)
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Where training events go: `sink("training_progress", job, progress)` while a job trains
        and `sink("training_finished", outcome)` when it ends. The bot passes `bot.dispatch`."""
        self._events = sink
        if self.queue is not None:
            self.queue.emit = sink

    async def start(self, *, run_queue: bool = True) -> None:
        """Open storage; with `run_queue`, also own the store: clean up after a crash and train.

        Without it (the CLI's list, generate, delete) this process leaves start-up clean-up and
        the queue to the one that runs them, the bot, which may be at work at the same time.
        """
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        url = database_url(self.settings.database_url, self.settings.database_path)
        on_workers = trainings_on_workers(self.settings.training_backend, url)
        if run_queue and not on_workers:  # workers own their stores; several bots may share one
            try:
                await asyncio.to_thread(self.store.lock_maintenance)
            except StoreError as exc:
                raise UserError(str(exc)) from None
            await asyncio.to_thread(self.store.recover)
        self.storage = await Storage.open(url)
        self.schedules = Scheduler(self.storage, clock=self.clock, find_persona=self.get_model)
        if on_workers:
            from bot.core.training.remote_queue import WorkerQueue  # loads procrastinate: scale-out mode only

            self.queue = WorkerQueue(
                self.storage,
                url,
                poll_seconds=self.settings.queue_poll_seconds,
                prepare_model=self.local_copy,
            )
        else:
            self.queue = TrainingQueue(
                self.storage,
                self.store,
                self.train_executor,
                lambda job: train_config(self.settings, job),
                workers=self.settings.training_workers,
            )
        self.queue.emit = self._events
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
        if self.storage is not None:
            await self.storage.close()
        self.store.unlock_maintenance()

    async def integrity_check(self) -> str:
        return await self.storage.integrity_check()

    async def local_copy(self, model: ModelRecord) -> None:
        """Make a persona trained on a worker loadable here: unpack it from the database into the
        local model store, once per version (a no-op for models already in MODELS_DIR)."""
        if not model.metrics.get("bundle"):
            return
        async with self._unpacking:
            if (
                await asyncio.to_thread(self.store.bundle_digest, model.guild_id, model.handle)
                == model.metrics["bundle"]
            ):
                return
            blob = await self.storage.blobs.get(persona_key(model.guild_id, model.handle))
            if blob is None:
                raise UserError(f"`{model.handle}`'s files are missing from the database; train it again.")
            digest, data = blob
            await asyncio.to_thread(self.store.unpack, data, digest, model.guild_id, model.handle)

    # -- personas -----------------------------------------------------------------------------

    async def get_model(self, guild_id: int, handle: str) -> ModelRecord:
        """A ready persona of this guild, or a UserError that says why not."""
        handle = normalize_handle(handle)
        model = await self.storage.models.get(guild_id, handle)
        if model is not None and model.status == "ready":
            return model
        job = await self.storage.jobs.active_for_handle(guild_id, handle)
        if job is not None:
            raise UserError(
                f"`{handle}` is still training (job #{job.id}, {job.state}); try again when it is done."
            )
        if model is not None:
            raise UserError(f"`{handle}` is {model.status} and cannot be used.")
        raise RegistryError(f"There is no model called `{handle}` in this server. See `/models list`.")

    async def find_model(self, guild_id: int, handle: str) -> ModelRecord | None:
        """The guild's persona of that handle in whatever state, or None (no checks, no errors)."""
        return await self.storage.models.get(guild_id, handle)

    async def list_models(self, guild_id: int) -> list[ModelRecord]:
        return await self.storage.models.list(guild_id)

    async def search_models(self, guild_id: int, prefix: str, limit: int = 25) -> list[ModelRecord]:
        """Ready personas whose handle or name starts with `prefix` (autocomplete)."""
        return await self.storage.models.search(guild_id, prefix, limit)

    async def edit_model(
        self, guild_id: int, handle: str, *, display_name: str | None = None, avatar: str | None = None
    ) -> ModelRecord:
        """Change a persona's shown name and/or picture (`avatar=NO_AVATAR`, "none", removes it)."""
        if display_name is None and avatar is None:
            raise UserError("Give a new `display_name`, a new `avatar`, or both.")
        model = await self.get_model(guild_id, handle)
        clear = avatar is not None and avatar.strip().lower() == NO_AVATAR
        url = normalize_http_url(avatar, what="The avatar URL") if avatar is not None and not clear else None
        name = clean_display_name(display_name, model.handle) if display_name is not None else None
        updated = await self.storage.models.update_profile(
            guild_id, model.handle, display_name=name, avatar_url=url, clear_avatar=clear
        )
        if updated is None:  # deleted meanwhile
            raise RegistryError(f"There is no model called `{model.handle}` in this server.")
        return updated

    def model_location(self, model: ModelRecord) -> str:
        return str(self.store.resolve(model.path))

    def loss_curve(self, model: ModelRecord) -> Path | None:
        """The persona's loss-curve picture, when its training drew one."""
        path = self.store.resolve(model.path) / LOSS_CURVE_FILE
        return path if path.is_file() else None

    async def model_folder(self, guild_id: int, handle: str) -> tuple[ModelRecord, Path]:
        """The persona and its folder, a Hugging Face model folder with its card (export)."""
        model = await self.get_model(guild_id, handle)
        await self.local_copy(model)
        return model, self.store.resolve(model.path)

    async def delete_model(self, guild_id: int, handle: str) -> ModelRecord:
        handle = normalize_handle(handle)
        model = await self.storage.models.delete(guild_id, handle)
        if model is None:
            raise RegistryError(f"There is no model called `{handle}` in this server.")
        await self.storage.blobs.delete(persona_key(guild_id, handle))
        await self.chatter.forget_persona(guild_id, handle)
        location = self.model_location(model)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.generate_executor, self.generator.forget, location)
        await asyncio.to_thread(self.store.remove, guild_id, handle)  # not behind a training
        return model

    # -- generate -----------------------------------------------------------------------------

    async def generate(
        self, guild_id: int, handle: str, prompt: str = "", n: int = 5
    ) -> tuple[ModelRecord, list[str]]:
        """Check the request, then write `n` posts in the persona's voice."""
        model, prompt = await self.check_generation(guild_id, handle, prompt, n)
        return model, await self.write_posts(model, prompt, n)

    async def check_generation(
        self, guild_id: int, handle: str, prompt: str | None, n: int
    ) -> tuple[ModelRecord, str]:
        """The first half of `generate`, for callers that answer differently once it passed:
        the ready persona and the prompt with its whitespace collapsed, or a UserError."""
        prompt = check_request(prompt, n)
        return await self.get_model(guild_id, handle), prompt

    async def write_posts(self, model: ModelRecord, prompt: str, n: int) -> list[str]:
        """The second half of `generate`: the posts, for a request `check_generation` accepted."""
        await self.local_copy(model)
        try:
            return await self.batcher.submit(GenerationRequest(self.model_location(model), prompt, n))
        except GenerationError as exc:
            raise UserError(str(exc)) from exc

    # -- hub import and export ------------------------------------------------------------------

    async def import_model(
        self, guild_id: int, repo: str, handle: str | None = None, created_by: int | None = None
    ) -> ModelRecord:
        """Register an existing fine-tuned model (e.g. huggingtweets/js_thrill) without training.

        The files are copied into the store, so the persona keeps working offline and is
        deleted with it; the hub is only asked when HF_LOCAL_MIRROR has no copy.
        """
        repo = check_hub_id(repo)
        handle = normalize_handle(handle or handle_for_hub_id(repo))
        if await self.storage.models.get(guild_id, handle):
            raise UserError(f"`{handle}` already exists here; delete it first or pick another handle.")
        await self.trainings.check_can_queue(guild_id, handle)
        staging = await asyncio.to_thread(self.store.new_staging_dir, guild_id, handle)
        try:
            await asyncio.to_thread(self._fetch_into, repo, staging)
            info = await asyncio.get_running_loop().run_in_executor(
                self.generate_executor, self._check_loadable, staging
            )
            final = await asyncio.to_thread(self.store.publish, staging, guild_id, handle)
        finally:
            await asyncio.to_thread(self.store.discard, staging)
        card = await asyncio.to_thread(read_card, final)
        model = ModelRecord(
            guild_id=guild_id,
            handle=handle,
            display_name=clean_display_name(card.display_name, handle),
            avatar_url=card.avatar_url,  # well formed or None (read_card drops a bad one)
            base_model=info.get("base_model") or card.base_model or repo,
            method="imported",
            path=self.store.relative(final),
            stats=card.stats,
            # The card's widget prompt ("My dream is") is what /models import and info suggest.
            metrics={"source": repo, "adapter": info.get("adapter", False), "suggested_prompt": card.prompt},
            created_by=created_by,
        )
        return await self.storage.models.save(model)

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
            raise UserError(
                f"There is no model `{repo}` on the Hugging Face hub (or it is private)."
            ) from None
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise UserError(
                f"Could not download `{repo}` from the Hugging Face hub ({exc.__class__.__name__})."
            ) from None

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
        if not any(
            a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in config.architectures or []
        ):
            raise UserError("That model is not a text-generation model (GPT-2 style).")
        return {"adapter": False, "base_model": getattr(config, "_name_or_path", None)}

    # -- guild options, channel webhooks and the post log ----------------------------------------

    @property
    def posts(self) -> Guilds:
        """Per-guild options (persona webhooks), the channels' webhooks and the log of generated
        posts ("Who made this?"): storage's own accessor, as there is nothing to check on the way."""
        return self.storage.guilds
