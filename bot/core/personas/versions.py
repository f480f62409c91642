"""Persona versions (`service.versions`): every training of a handle, new or an update, publishes the
next version (v1, v2, ...); the one it replaces is kept for `/models rollback`, up to
PERSONA_VERSIONS_KEPT earlier versions, and older ones are deleted with their files.

Crash safety comes from the order of the writes: the new version's folder is complete and in place
(modelstore.publish) before the registry points at it, in one transaction that also keeps the
previous version (storage models.publish); the folders of dropped versions are removed only after
that commit. A process killed in between leaves the current version serving and at worst a folder
no row names, which the next publish of that version replaces.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bot.core.errors import UserError
from bot.core.handles import normalize_handle
from bot.core.personas.modelstore import ModelStore
from bot.core.storage import ModelRecord, Storage, persona_key

log = logging.getLogger(__name__)


def next_version(current: ModelRecord | None) -> int:
    return current.version + 1 if current is not None else 1


async def publish_version(storage: Storage, store: ModelStore, model: ModelRecord, keep: int) -> ModelRecord:
    """Make a trained persona current; the versions beyond `keep` go, files and all."""
    dropped = await storage.models.publish(model, keep)
    await remove_versions(storage, store, [d for d in dropped if d.path != model.path])
    return model


async def remove_versions(storage: Storage, store: ModelStore, records: list[ModelRecord]) -> None:
    """Delete versions' files: their folders here and, for personas trained on workers, their archives."""
    for record in records:
        if record.metrics.get("bundle"):
            await storage.blobs.delete(persona_key(record.guild_id, record.handle, record.version))
        await asyncio.to_thread(store.remove_folder, store.resolve(record.path))
        log.info("Deleted %s of %s in guild %s", record.version_label, record.handle, record.guild_id)


async def local_folder(storage: Storage, store: ModelStore, model: ModelRecord) -> Path:
    """The persona's folder in this process's model store: a persona trained on a worker is unpacked
    from its archive in the database, once per version."""
    folder = store.resolve(model.path)
    digest = model.metrics.get("bundle")
    if digest and await asyncio.to_thread(store.bundle_digest, folder) != digest:
        blob = await storage.blobs.get(persona_key(model.guild_id, model.handle, model.version))
        if blob is None:
            raise UserError(f"`{model.handle}`'s files are missing from the database; train it again.")
        data_digest, data = blob
        await asyncio.to_thread(store.unpack, data, data_digest, model.guild_id, model.handle, model.version)
    return folder


class Versions:
    def __init__(self, service):
        self.service = service

    async def earlier(self, guild_id: int, handle: str) -> list[ModelRecord]:
        """The persona's earlier versions that /models rollback can go back to, newest first."""
        return await self.service.storage.models.versions(guild_id, normalize_handle(handle))

    async def rollback(self, guild_id: int, handle: str) -> tuple[ModelRecord, ModelRecord]:
        """Go back one version: the previous one serves again, the current one is deleted.
        Returns (restored, deleted)."""
        service = self.service
        current = await service.get_model(guild_id, handle)
        job = await service.storage.jobs.active_for_handle(guild_id, current.handle)
        if job is not None:
            raise UserError(
                f"`{current.handle}` is training (job #{job.id}); roll back when it is done, or cancel it."
            )
        restored = await service.storage.models.rollback(guild_id, current.handle)
        if restored is None:
            kept = service.settings.persona_versions_kept
            why = "" if kept else " (PERSONA_VERSIONS_KEPT=0: earlier versions are not kept)"
            raise UserError(f"`{current.handle}` has no earlier version to go back to{why}.")
        back, gone = restored
        location = service.model_location(gone)
        await asyncio.get_running_loop().run_in_executor(
            service.generate_executor, service.generator.forget, location
        )
        await remove_versions(service.storage, service.store, [gone])
        log.info("Rolled %s back to %s in guild %s", back.handle, back.version_label, guild_id)
        return back, gone
