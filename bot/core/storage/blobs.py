"""Files kept in the database (a LoRA persona, a running training's checkpoint), by key.

Bot and training workers then need no shared disk: a worker puts the files, the bot gets them.
Each blob carries the sha256 of its bytes, so a reader can tell whether its local copy is stale
without downloading it again.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import delete, select

from bot.core.storage.database import Database
from bot.core.storage.schema import blobs


class Blobs:
    def __init__(self, db: Database):
        self.db = db

    async def put(self, key: str, data: bytes, guild_id: int | None = None) -> str:
        """Store (or replace) a blob; returns its digest."""
        digest = hashlib.sha256(data).hexdigest()
        values = dict(key=key, guild_id=guild_id, digest=digest, data=data, updated_at=time.time())
        statement = self.db.insert(blobs).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[blobs.c.key], set_={k: v for k, v in values.items() if k != "key"}
        )
        async with self.db.write() as conn:
            await conn.execute(statement)
        return digest

    async def get(self, key: str) -> tuple[str, bytes] | None:
        """(digest, data), or None when there is no such blob."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(blobs.c.digest, blobs.c.data).where(blobs.c.key == key))).first()
        return (row.digest, bytes(row.data)) if row else None

    async def digest(self, key: str) -> str | None:
        return await self.db.scalar(select(blobs.c.digest).where(blobs.c.key == key))

    async def delete(self, key: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(blobs).where(blobs.c.key == key))


def persona_key(guild_id: int, handle: str, version: int = 1) -> str:
    """Where a LoRA persona trained on a worker is kept (one archive per version; v1 where the first
    releases kept the one)."""
    key = f"model/{int(guild_id)}/{handle}"
    return key if version == 1 else f"{key}@v{int(version)}"


def checkpoint_key(job_id: int) -> str:
    """Where a worker keeps the last checkpoint of a training, for whichever worker resumes it."""
    return f"checkpoint/job-{int(job_id)}"
