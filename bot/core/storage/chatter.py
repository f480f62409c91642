"""/chatter: which personas chime in where, and the claims that make each message answered once.

Only ids and times are kept for an answer, never the text of the message it answered.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select, text

from bot.core.storage.database import Database
from bot.core.storage.records import ChatterSetting, from_row
from bot.core.storage.schema import chatter_answers as answers
from bot.core.storage.schema import chatter_settings as settings

ANSWER_RETENTION_S = 86400  # claims older than this are pruned (the gap and the hourly cap look back less)
_LOCK_SPACE = 7217052  # advisory-lock namespace (migrations use 7217051)


class Chatter:
    def __init__(self, db: Database):
        self.db = db

    async def save(self, setting: ChatterSetting) -> ChatterSetting:
        """Insert or replace the setting of this persona in this channel."""
        setting.updated_at = time.time()
        values = {
            "guild_id": setting.guild_id,
            "channel_id": setting.channel_id,
            "handle": setting.handle,
            "rate": setting.rate,
            "cooldown_s": setting.cooldown_s,
            "allow_personas": int(setting.allow_personas),
            "updated_by": setting.updated_by,
            "updated_at": setting.updated_at,
        }
        insert = self.db.insert(settings).values(values)
        statement = insert.on_conflict_do_update(
            index_elements=["channel_id", "handle"],
            set_={k: insert.excluded[k] for k in values if k not in ("channel_id", "handle")},
        )
        async with self.db.write() as conn:
            await conn.execute(statement)
        return setting

    async def list(self, guild_id: int) -> list[ChatterSetting]:
        query = (
            select(settings)
            .where(settings.c.guild_id == guild_id)
            .order_by(settings.c.channel_id, settings.c.handle)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [from_row(ChatterSetting, r, allow_personas=bool(r.allow_personas)) for r in rows]

    async def remove(self, guild_id: int, channel_id: int | None = None, handle: str | None = None) -> int:
        """Delete the guild's settings in a channel (or all channels), for one persona or all."""
        statement = delete(settings).where(settings.c.guild_id == guild_id)
        if channel_id is not None:
            statement = statement.where(settings.c.channel_id == channel_id)
        if handle is not None:
            statement = statement.where(settings.c.handle == handle)
        async with self.db.write() as conn:
            return (await conn.execute(statement)).rowcount

    async def claim(
        self,
        *,
        message_id: int,
        guild_id: int,
        channel_id: int,
        handle: str,
        kind: str,
        now: float,
        gap_s: float = 0,
        to_persona: bool = False,
        persona_cap: int = 0,
    ) -> bool:
        """Take the right to answer this message, once across every process sharing the database.

        Refused when the message was already claimed, when `gap_s` > 0 and the channel had a
        chime-in less than `gap_s` ago, or when it answers a persona and the guild already gave
        `persona_cap` such answers in the last hour. All in one transaction, serialised per guild.
        """
        async with self.db.write() as conn:
            if self.db.dialect == "postgresql":  # SQLite's BEGIN IMMEDIATE already serialises writers
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:space, :key)"),
                    {"space": _LOCK_SPACE, "key": guild_id % (2**31)},
                )
            await conn.execute(
                delete(answers).where(
                    answers.c.guild_id == guild_id, answers.c.created_at < now - ANSWER_RETENTION_S
                )
            )
            if not await self._may_claim(
                conn, message_id, guild_id, channel_id, now, gap_s, to_persona, persona_cap
            ):
                return False
            insert = self.db.insert(answers).values(
                message_id=message_id,
                guild_id=guild_id,
                channel_id=channel_id,
                handle=handle,
                kind=kind,
                to_persona=int(to_persona),
                created_at=now,
            )
            # RETURNING, not rowcount: psycopg's async cursor reports -1 for this statement.
            inserted = await conn.execute(insert.on_conflict_do_nothing().returning(answers.c.message_id))
            return inserted.first() is not None

    @staticmethod
    async def _may_claim(conn, message_id, guild_id, channel_id, now, gap_s, to_persona, persona_cap) -> bool:
        """Not claimed yet, outside the channel's gap, under the hourly persona-to-persona cap."""
        if await conn.scalar(select(answers.c.message_id).where(answers.c.message_id == message_id)):
            return False
        if gap_s > 0:
            last = await conn.scalar(
                select(func.max(answers.c.created_at)).where(
                    answers.c.channel_id == channel_id, answers.c.kind == "chime"
                )
            )
            if last is not None and now - last < gap_s:
                return False
        if to_persona:
            given = await conn.scalar(
                select(func.count()).where(
                    answers.c.guild_id == guild_id,
                    answers.c.to_persona == 1,
                    answers.c.created_at > now - 3600,
                )
            )
            if given >= persona_cap:
                return False
        return True
