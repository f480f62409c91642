"""Personas (trained or imported models) and whose messages went into them."""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, func, or_, select, update

from bot.core.storage.database import Database
from bot.core.storage.records import ModelRecord, from_row
from bot.core.storage.schema import model_sources, models


class Models:
    def __init__(self, db: Database):
        self.db = db

    async def save(self, record: ModelRecord) -> ModelRecord:
        """Insert the model, or replace the guild's model of the same handle (retraining)."""
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
        }
        insert = self.db.insert(models).values(values)
        changed = {k: insert.excluded[k] for k in values if k not in ("guild_id", "handle")}
        statement = insert.on_conflict_do_update(index_elements=["guild_id", "handle"], set_=changed)
        async with self.db.write() as conn:
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
        """Remove the registry row (the caller removes the folder afterwards)."""
        statement = delete(models).where(models.c.guild_id == guild_id, models.c.handle == handle)
        async with self.db.write() as conn:
            row = (await conn.execute(statement.returning(*models.c))).first()
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
