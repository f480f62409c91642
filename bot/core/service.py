"""The Discord-free core behind one door: `PersonaService`.

The Discord cogs and the CLI touch the core only through its public methods, so they share one
behaviour: the same validation, the same guild scoping, the same files. Read its method list
top to bottom for a persona's whole life: train, generate, schedule, export, erase.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.core.conversation.chatter import Chatter
from bot.core.conversation.realorfake import RealOrFake
from bot.core.conversation.schedules import Scheduler
from bot.core.errors import UserError
from bot.core.generation.batcher import GenerationBatcher
from bot.core.generation.decoding import sampling_from
from bot.core.generation.generator import GenerationError, GenerationRequest, Generator
from bot.core.handles import RegistryError, clean_display_name, handle_for_hub_id, normalize_handle
from bot.core.ingest.download import UrlReader
from bot.core.limits import MAX_PROMPT_CHARS, MAX_TWEETS_PER_REQUEST
from bot.core.personas.hubimport import check_hub_id, check_loadable, fetch_repo
from bot.core.personas.modelcard import read_card
from bot.core.personas.modelstore import ModelStore, StoreError
from bot.core.personas.versions import Versions, local_folder, remove_versions
from bot.core.personas.voices import Voices
from bot.core.storage import Guilds, ModelRecord, Storage, database_url, persona_key
from bot.core.training.local_queue import TrainingQueue
from bot.core.training.reports import VoiceReports
from bot.core.training.trainings import Trainings
from bot.core.training.trainrun import LOSS_CURVE_FILE, EventSink, TrainingBackend, report_plan, train_config
from bot.core.urls import NO_AVATAR, normalize_http_url

log = logging.getLogger(__name__)


def check_request(prompt: str | None, n: int) -> str:
    """Validate a generation request; returns the prompt with its whitespace collapsed."""
    if not 1 <= n <= MAX_TWEETS_PER_REQUEST:
        raise UserError(f"Ask for between 1 and {MAX_TWEETS_PER_REQUEST} tweets.")
    prompt = " ".join((prompt or "").split())
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"The prompt is too long ({len(prompt)} characters; at most {MAX_PROMPT_CHARS}).")
    return prompt


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
            sampling_from(settings),
            cache_size=settings.model_cache_size,
            int8=None if settings.generation_int8 else False,
        )
        self.batcher = GenerationBatcher(self.generator, self.generate_executor)
        self.chatter = Chatter(self, clock=clock)  # personas in the conversation (conversation/chatter.py)
        self.downloads = UrlReader(settings)  # `url:` options and the CLI's --file given a link
        self.voices = Voices(self)  # members' personas of themselves (core/personas/voices.py)
        self._unpacking = asyncio.Lock()
        self.trainings = Trainings(self)  # /train: service.trainings.submit(...), .cancel(...)
        self.games = RealOrFake(self, clock=clock)  # /realorfake (core/conversation/realorfake.py)
        self.reports = VoiceReports(self)  # does it sound like the person? (core/training/voicereport.py)
        self.versions = Versions(self)  # v1, v2, ... and /models rollback (core/personas/versions.py)
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
                report=report_plan(self.settings),
                versions_kept=self.settings.persona_versions_kept,
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
        async with self._unpacking:
            await local_folder(self.storage, self.store, model)

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

    async def decoding_path(self, model: ModelRecord) -> str:
        """ "int8" or "generic": how this persona's posts are sampled on this machine."""
        return await asyncio.to_thread(self.generator.decoding_path, self.model_location(model))

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
        """Delete a persona with every version it keeps, its files and what refers to it."""
        handle = normalize_handle(handle)
        earlier = await self.storage.models.versions(guild_id, handle)
        model = await self.storage.models.delete(guild_id, handle)
        if model is None:
            raise RegistryError(f"There is no model called `{handle}` in this server.")
        await self.storage.blobs.delete(persona_key(guild_id, handle, model.version))
        await remove_versions(self.storage, self.store, earlier)
        await self.chatter.forget_persona(guild_id, handle)
        await self.storage.games.delete_for_persona(guild_id, handle)  # its rounds show its posts
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
            await asyncio.to_thread(fetch_repo, repo, staging, self.settings.hf_local_mirror)
            info = await asyncio.get_running_loop().run_in_executor(
                self.generate_executor, check_loadable, staging
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

    # -- guild options, channel webhooks and the post log ----------------------------------------

    @property
    def posts(self) -> Guilds:
        """Per-guild options (persona webhooks), the channels' webhooks and the log of generated
        posts ("Who made this?"): storage's own accessor, as there is nothing to check on the way."""
        return self.storage.guilds
