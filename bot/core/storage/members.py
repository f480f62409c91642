"""Members' voices: consent, the messages collected for training, and where collection stopped."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from .database import Database
from .schema import collected_messages as collected
from .schema import guild_excluded_channels as excluded
from .schema import history_cursors as cursors
from .schema import model_sources, voice_consent


class Members:
    def __init__(self, db: Database):
        self.db = db

    async def set_consent(self, user_id: int, opted_in: bool) -> None:
        insert = self.db.insert(voice_consent).values(
            user_id=user_id, opted_in=int(opted_in), updated_at=time.time()
        )
        statement = insert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"opted_in": insert.excluded.opted_in, "updated_at": insert.excluded.updated_at},
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def opted_in(self, user_id: int) -> bool:
        return bool(
            await self.db.scalar(select(voice_consent.c.opted_in).where(voice_consent.c.user_id == user_id))
        )

    async def cursor(self, guild_id: int, user_id: int, channel_id: int) -> tuple[int | None, bool]:
        query = select(cursors.c.before_id, cursors.c.finished).where(
            cursors.c.guild_id == guild_id, cursors.c.user_id == user_id, cursors.c.channel_id == channel_id
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return (row.before_id, bool(row.finished)) if row else (None, False)

    async def save_page(
        self,
        guild_id: int,
        user_id: int,
        channel_id: int,
        messages: list[tuple[int, str]],
        before_id: int | None,
        finished: bool,
    ) -> None:
        """Store one page of a member's messages and where the next page starts, in one transaction."""
        page = self.db.insert(collected).on_conflict_do_nothing(index_elements=["message_id"])
        where = self.db.insert(cursors).values(
            guild_id=guild_id,
            user_id=user_id,
            channel_id=channel_id,
            before_id=before_id,
            finished=int(finished),
        )
        where = where.on_conflict_do_update(
            index_elements=["guild_id", "user_id", "channel_id"],
            set_={"before_id": where.excluded.before_id, "finished": where.excluded.finished},
        )
        async with self.db.write() as conn:
            if messages:
                await conn.execute(
                    page,
                    [
                        {
                            "message_id": mid,
                            "guild_id": guild_id,
                            "user_id": user_id,
                            "channel_id": channel_id,
                            "text": text,
                        }
                        for mid, text in messages
                    ],
                )
            await conn.execute(where)

    async def collected(self, guild_id: int, user_id: int) -> list[str]:
        query = (
            select(collected.c.text)
            .where(collected.c.guild_id == guild_id, collected.c.user_id == user_id)
            .order_by(collected.c.message_id)
        )
        async with self.db.read() as conn:
            return list((await conn.execute(query)).scalars())

    async def forget(self, user_id: int, guild_id: int | None = None) -> int:
        """Delete the member's collected messages, cursors and persona sources.

        Returns how many messages were removed."""
        async with self.db.write() as conn:
            removed = 0
            for table in (collected, cursors, model_sources):
                statement = delete(table).where(table.c.user_id == user_id)
                if guild_id is not None:
                    statement = statement.where(table.c.guild_id == guild_id)
                result = await conn.execute(statement)
                removed = result.rowcount if table is collected else removed
        return removed

    async def set_channel_excluded(self, guild_id: int, channel_id: int, excluded_: bool) -> None:
        async with self.db.write() as conn:
            if excluded_:
                await conn.execute(
                    self.db.insert(excluded)
                    .values(guild_id=guild_id, channel_id=channel_id)
                    .on_conflict_do_nothing()
                )
            else:
                await conn.execute(
                    delete(excluded).where(
                        excluded.c.guild_id == guild_id, excluded.c.channel_id == channel_id
                    )
                )

    async def excluded_channels(self, guild_id: int) -> set[int]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(excluded.c.channel_id).where(excluded.c.guild_id == guild_id))
            return set(rows.scalars())
