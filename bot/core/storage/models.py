"""Personas (trained or imported models) and whose messages went into them."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

from sqlalchemy import delete, func, or_, select, update

from bot.core.storage.database import Database
from bot.core.storage.records import ModelRecord, from_row
from bot.core.storage.schema import model_sources, model_versions, models


class Models:
    def __init__(self, db: Database):
        self.db = db

    async def save(self, record: ModelRecord) -> ModelRecord:
        """Insert the model, or replace the guild's model of the same handle (an import over it)."""
        async with self.db.write() as conn:
            return await self._upsert(conn, record)

    async def publish(self, record: ModelRecord, keep: int) -> list[ModelRecord]:
        """Make `record` the persona's current version, in one transaction: the version it replaces
        is kept for rollback, and the earlier versions beyond `keep` are dropped from the registry.
        Returns the dropped ones, whose folders and archives the caller removes afterwards."""
        async with self.db.write() as conn:
            current = await self._current(conn, record.guild_id, record.handle)
            if current is not None and current.version != record.version:
                await conn.execute(
                    self.db.insert(model_versions)
                    .values(_archived(current))
                    .on_conflict_do_update(
                        index_elements=["guild_id", "handle", "version"],
                        set_={"record_json": json.dumps(_as_json(current))},
                    )
                )
            await self._upsert(conn, record)
            earlier = await self._versions(conn, record.guild_id, record.handle)
            dropped = [v for v in earlier if v.version == record.version] + [
                v for v in earlier if v.version != record.version
            ][keep:]
            for version in dropped:
                await conn.execute(_delete_version(version))
        return dropped

    async def versions(self, guild_id: int, handle: str) -> list[ModelRecord]:
        """The persona's earlier versions kept for rollback, newest first."""
        async with self.db.read() as conn:
            return await self._versions(conn, guild_id, handle)

    async def rollback(self, guild_id: int, handle: str) -> tuple[ModelRecord, ModelRecord] | None:
        """Put the newest earlier version back in place of the current one (which is dropped), in one
        transaction; the shown name and picture stay as they are now. (restored, dropped) or None
        when there is no earlier version."""
        async with self.db.write() as conn:
            current = await self._current(conn, guild_id, handle)
            earlier = await self._versions(conn, guild_id, handle) if current else []
            if not earlier:
                return None
            restored = replace(
                earlier[0], display_name=current.display_name, avatar_url=current.avatar_url, id=None
            )
            await conn.execute(_delete_version(restored))
            await self._upsert(conn, restored)
        return restored, current

    async def _current(self, conn, guild_id: int, handle: str) -> ModelRecord | None:
        query = select(models).where(models.c.guild_id == guild_id, models.c.handle == handle)
        row = (await conn.execute(query)).first()
        return from_row(ModelRecord, row) if row else None

    async def _versions(self, conn, guild_id: int, handle: str) -> list[ModelRecord]:
        query = (
            select(model_versions.c.record_json)
            .where(model_versions.c.guild_id == guild_id, model_versions.c.handle == handle)
            .order_by(model_versions.c.version.desc())
        )
        return [ModelRecord(**json.loads(text)) for text in (await conn.execute(query)).scalars()]

    async def _upsert(self, conn, record: ModelRecord) -> ModelRecord:
        now = time.time()
        record.created_at = record.created_at or now
        record.updated_at = now
        values = {
            "guild_id": record.guild_id,
            "handle": record.handle,
            "display_name": record.display_name,
            "avatar_url": record.avatar_url,
            "base_model": record.base_model,
            "method": record.method,
            "path": record.path,
            "status": record.status,
            "stats_json": json.dumps(record.stats),
            "metrics_json": json.dumps(record.metrics),
            "created_by": record.created_by,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "version": record.version,
        }
        insert = self.db.insert(models).values(values)
        changed = {k: insert.excluded[k] for k in values if k not in ("guild_id", "handle")}
        statement = insert.on_conflict_do_update(index_elements=["guild_id", "handle"], set_=changed)
        record.id = (await conn.execute(statement.returning(models.c.id))).scalar_one()
        return record

    async def get(self, guild_id: int, handle: str) -> ModelRecord | None:
        query = select(models).where(models.c.guild_id == guild_id, models.c.handle == handle)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return from_row(ModelRecord, row) if row else None

    async def list(self, guild_id: int) -> list[ModelRecord]:
        query = select(models).where(models.c.guild_id == guild_id).order_by(models.c.handle)
        async with self.db.read() as conn:
            return [from_row(ModelRecord, row) for row in await conn.execute(query)]

    async def search(self, guild_id: int, prefix: str, limit: int = 25) -> list[ModelRecord]:
        """Ready personas whose handle or display name starts with `prefix` (autocomplete)."""
        pattern = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = (
            select(models)
            .where(
                models.c.guild_id == guild_id,
                models.c.status == "ready",
                or_(
                    models.c.handle.like(pattern, escape="\\"),
                    func.lower(models.c.display_name).like(pattern, escape="\\"),
                ),
            )
            .order_by(models.c.handle)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [from_row(ModelRecord, row) for row in await conn.execute(query)]

    async def set_metrics(self, guild_id: int, handle: str, metrics: dict) -> None:
        """Replace a persona's figures (a voice report computed again)."""
        statement = (
            update(models)
            .where(models.c.guild_id == guild_id, models.c.handle == handle)
            .values(metrics_json=json.dumps(metrics), updated_at=time.time())
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def update_profile(
        self,
        guild_id: int,
        handle: str,
        *,
        display_name: str | None = None,
        avatar_url: str | None = None,
        clear_avatar: bool = False,
    ) -> ModelRecord | None:
        """Change how a persona is shown (name, picture); None if there is no such model."""
        values: dict = {"updated_at": time.time()}
        if display_name is not None:
            values["display_name"] = display_name
        if clear_avatar:
            values["avatar_url"] = None
        elif avatar_url is not None:
            values["avatar_url"] = avatar_url
        statement = (
            update(models)
            .where(models.c.guild_id == guild_id, models.c.handle == handle)
            .values(values)
            .returning(*models.c)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(statement)).first()
        return from_row(ModelRecord, row) if row else None

    async def delete(self, guild_id: int, handle: str) -> ModelRecord | None:
        """Remove the persona and its earlier versions from the registry (the caller lists them first
        with `versions` and removes their folders afterwards); None when there is no such persona."""
        statement = delete(models).where(models.c.guild_id == guild_id, models.c.handle == handle)
        async with self.db.write() as conn:
            row = (await conn.execute(statement.returning(*models.c))).first()
            await conn.execute(
                delete(model_versions).where(
                    model_versions.c.guild_id == guild_id, model_versions.c.handle == handle
                )
            )
        return from_row(ModelRecord, row) if row else None

    async def set_sources(self, guild_id: int, handle: str, user_ids: list[int]) -> None:
        """Record whose messages went into a persona (replacing what an earlier version used)."""
        async with self.db.write() as conn:
            await conn.execute(
                delete(model_sources).where(
                    model_sources.c.guild_id == guild_id, model_sources.c.handle == handle
                )
            )
            if user_ids:
                await conn.execute(
                    model_sources.insert(),
                    [{"guild_id": guild_id, "handle": handle, "user_id": u} for u in user_ids],
                )

    async def sources(self, guild_id: int, handle: str) -> list[int]:
        """The members whose own data a persona holds (a /voice persona)."""
        query = select(model_sources.c.user_id).where(
            model_sources.c.guild_id == guild_id, model_sources.c.handle == handle
        )
        async with self.db.read() as conn:
            return list((await conn.execute(query)).scalars())

    async def using(self, user_id: int, guild_id: int | None = None) -> list[tuple[int, str]]:
        """(guild, handle) of every persona trained on this member's messages."""
        query = select(model_sources.c.guild_id, model_sources.c.handle).where(
            model_sources.c.user_id == user_id
        )
        if guild_id is not None:
            query = query.where(model_sources.c.guild_id == guild_id)
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(model_sources.c.guild_id, model_sources.c.handle))
            return [(row.guild_id, row.handle) for row in rows]

    async def forget_sources(self, user_id: int, guild_id: int | None = None) -> None:
        """Forget that the member's data went into personas (theirs were deleted first)."""
        statement = delete(model_sources).where(model_sources.c.user_id == user_id)
        if guild_id is not None:
            statement = statement.where(model_sources.c.guild_id == guild_id)
        async with self.db.write() as conn:
            await conn.execute(statement)


def _as_json(record: ModelRecord) -> dict:
    return {k: v for k, v in asdict(record).items() if k != "id"}


def _archived(record: ModelRecord) -> dict:
    return {
        "guild_id": record.guild_id,
        "handle": record.handle,
        "version": record.version,
        "record_json": json.dumps(_as_json(record)),
        "created_at": time.time(),
    }


def _delete_version(record: ModelRecord):
    return delete(model_versions).where(
        model_versions.c.guild_id == record.guild_id,
        model_versions.c.handle == record.handle,
        model_versions.c.version == record.version,
    )
