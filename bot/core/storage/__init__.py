"""All of the registry's SQL, behind one object: `await Storage.open(url)`.

    storage.models     personas and whose data went into them
    storage.jobs       training jobs (queue, claims, progress, crash re-queue)
    storage.schedules  auto-post schedules
    storage.guilds     persona webhooks, guild options, the generated-post log
    storage.chatter    /chatter settings and the claims that answer each message once
    storage.games      /realorfake rounds and votes (fool rates, members' accuracy)
    storage.blobs      files kept in the database (LoRA personas and checkpoints of worker trainings)

Every query about a guild's data takes the guild id and filters on it, so one guild can never
read, use or delete another guild's model. The dialect (SQLite file by default, PostgreSQL with
DATABASE_URL) is decided in database.py; the schema and its versions in schema.py/migrations.py.
"""

from __future__ import annotations

from bot.core.storage.blobs import Blobs, checkpoint_key, persona_key
from bot.core.storage.chatter import Chatter
from bot.core.storage.database import Database, database_url
from bot.core.storage.games import Games, Score
from bot.core.storage.guilds import Guilds
from bot.core.storage.jobs import Jobs
from bot.core.storage.migrations import SCHEMA_VERSION
from bot.core.storage.models import Models
from bot.core.storage.records import (
    ChatterSetting,
    Erasure,
    GameRound,
    JobRecord,
    ModelRecord,
    Post,
    Schedule,
    format_interval,
)
from bot.core.storage.schedules import Schedules


class Storage:
    def __init__(self, db: Database):
        self.db = db
        self.models = Models(db)
        self.jobs = Jobs(db)
        self.schedules = Schedules(db)
        self.guilds = Guilds(db)
        self.blobs = Blobs(db)
        self.chatter = Chatter(db)
        self.games = Games(db)

    @classmethod
    async def open(cls, url: str) -> Storage:
        """Open (and migrate) the database at a SQLAlchemy URL; see `database_url`."""
        return cls(await Database.open(url))

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def close(self) -> None:
        await self.db.close()

    async def schema_version(self) -> int:
        return await self.db.schema_version()

    async def integrity_check(self) -> str:
        return await self.db.integrity_check()


__all__ = [
    "SCHEMA_VERSION",
    "ChatterSetting",
    "Erasure",
    "GameRound",
    "JobRecord",
    "ModelRecord",
    "Post",
    "Schedule",
    "Score",
    "Storage",
    "checkpoint_key",
    "persona_key",
    "database_url",
    "format_interval",
]
