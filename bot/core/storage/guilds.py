"""Small per-guild records: persona webhooks per channel, guild options, the log of generated posts."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from bot.core.storage.database import Database
from bot.core.storage.records import Post, from_row
from bot.core.storage.schema import channel_webhooks as webhooks
from bot.core.storage.schema import generated_posts as posts
from bot.core.storage.schema import guild_options as options


class Guilds:
    def __init__(self, db: Database):
        self.db = db

    async def webhook(self, channel_id: int) -> tuple[int, str] | None:
        query = select(webhooks.c.webhook_id, webhooks.c.webhook_token).where(
            webhooks.c.channel_id == channel_id
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return (row.webhook_id, row.webhook_token) if row else None

    async def save_webhook(self, guild_id: int, channel_id: int, webhook_id: int, token: str) -> None:
        insert = self.db.insert(webhooks).values(
            channel_id=channel_id, guild_id=guild_id, webhook_id=webhook_id, webhook_token=token
        )
        statement = insert.on_conflict_do_update(
            index_elements=["channel_id"],
            set_={k: insert.excluded[k] for k in ("guild_id", "webhook_id", "webhook_token")},
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def forget_webhook(self, channel_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(webhooks).where(webhooks.c.channel_id == channel_id))

    async def persona_webhooks(self, guild_id: int) -> bool:
        query = select(options.c.persona_webhooks).where(options.c.guild_id == guild_id)
        return bool(await self.db.scalar(query))

    async def set_persona_webhooks(self, guild_id: int, enabled: bool) -> None:
        insert = self.db.insert(options).values(guild_id=guild_id, persona_webhooks=int(enabled))
        statement = insert.on_conflict_do_update(
            index_elements=["guild_id"], set_={"persona_webhooks": insert.excluded.persona_webhooks}
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def record_post(
        self,
        *,
        message_id: int,
        guild_id: int,
        channel_id: int,
        handle: str,
        requested_by: int | None = None,
        schedule_id: int | None = None,
        answered_message_id: int | None = None,
    ) -> None:
        insert = self.db.insert(posts).values(
            message_id=message_id,
            guild_id=guild_id,
            channel_id=channel_id,
            handle=handle,
            requested_by=requested_by,
            schedule_id=schedule_id,
            answered_message_id=answered_message_id,
            created_at=time.time(),
        )
        statement = insert.on_conflict_do_update(
            index_elements=["message_id"],
            set_={
                k: insert.excluded[k]
                for k in (
                    "guild_id",
                    "channel_id",
                    "handle",
                    "requested_by",
                    "schedule_id",
                    "answered_message_id",
                    "created_at",
                )
            },
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def post(self, guild_id: int, message_id: int) -> Post | None:
        query = select(posts).where(posts.c.guild_id == guild_id, posts.c.message_id == message_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return from_row(Post, row) if row else None
