"""The per-guild registry of models, training jobs and schedules (SQLite via aiosqlite).

Every public query that touches a guild's data takes the guild id and filters on it, so one
guild can never read, use or delete another guild's model. The schema is versioned: MIGRATIONS
are applied in order at start-up, each in its own transaction, and `PRAGMA user_version`
records how far we got.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import aiosqlite

from .errors import UserError

HANDLE_RE = re.compile(r"^[a-z0-9_]{1,32}(?:-[a-z0-9_]{1,32}){0,2}$")
MAX_DISPLAY_NAME = 80
RESERVED_HANDLES = {"everyone", "here"}


class RegistryError(UserError):
    """A user-facing problem with a registry request (bad handle, unknown model...)."""


def normalize_handle(raw: str) -> str:
    """Turn user input such as '@JS_Thrill' into the stored handle 'js_thrill', or refuse it.

    Handles name folders on disk, so only [a-z0-9_] (Twitter's own alphabet) is accepted, with
    '-' joining up to three people for a multi-person model.
    """
    handle = (raw or "").strip().lstrip("@").lower()
    if not handle:
        raise RegistryError("The handle is empty.")
    if len(handle) > 98:
        raise RegistryError("That handle is too long (at most 32 characters per person).")
    if handle in RESERVED_HANDLES:
        raise RegistryError(f"`{handle}` is reserved by Discord (it would look like a mass mention); pick another handle.")
    if not HANDLE_RE.match(handle):
        raise RegistryError(
            "A handle may only use letters, digits and underscores (like a Twitter handle), "
            "at most 32 characters, e.g. `js_thrill`."
        )
    return handle


def clean_display_name(raw: str | None, handle: str) -> str:
    name = " ".join((raw or "").split())[:MAX_DISPLAY_NAME]
    return name or handle


MIGRATIONS: list[str] = [
    # 1: models, training jobs, schedules.
    """
    CREATE TABLE models (
        id            INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        handle        TEXT    NOT NULL,
        display_name  TEXT    NOT NULL,
        avatar_url    TEXT,
        base_model    TEXT    NOT NULL,
        method        TEXT    NOT NULL,          -- lora | full | imported
        path          TEXT    NOT NULL,          -- model directory, or a hub id for imports
        status        TEXT    NOT NULL DEFAULT 'ready',
        stats_json    TEXT    NOT NULL DEFAULT '{}',
        metrics_json  TEXT    NOT NULL DEFAULT '{}',
        created_by    INTEGER,
        created_at    REAL    NOT NULL,
        updated_at    REAL    NOT NULL,
        UNIQUE (guild_id, handle)
    );
    CREATE TABLE training_jobs (
        id            INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        handle        TEXT    NOT NULL,
        display_name  TEXT    NOT NULL,
        avatar_url    TEXT,
        base_model    TEXT    NOT NULL,
        method        TEXT    NOT NULL,
        epochs        INTEGER NOT NULL,
        requested_by  INTEGER,
        channel_id    INTEGER,
        corpus_json   TEXT    NOT NULL,
        stats_json    TEXT    NOT NULL DEFAULT '{}',
        state         TEXT    NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        progress_json TEXT    NOT NULL DEFAULT '{}',
        error         TEXT,
        interrupted   INTEGER NOT NULL DEFAULT 0,  -- times a restart found it running
        created_at    REAL    NOT NULL,
        started_at    REAL,
        finished_at   REAL
    );
    CREATE INDEX training_jobs_state ON training_jobs (state, id);
    CREATE INDEX training_jobs_guild ON training_jobs (guild_id, handle);
    CREATE TABLE schedules (
        id            INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        handle        TEXT    NOT NULL,
        channel_id    INTEGER NOT NULL,
        interval_s    INTEGER NOT NULL,
        jitter_s      INTEGER NOT NULL DEFAULT 0,
        prompt        TEXT    NOT NULL DEFAULT '',
        next_run_at   REAL    NOT NULL,
        paused        INTEGER NOT NULL DEFAULT 0,
        pause_reason  TEXT,
        created_by    INTEGER,
        created_at    REAL    NOT NULL
    );
    CREATE INDEX schedules_due ON schedules (paused, next_run_at);
    """,
    # 2: daily schedules, crash-safe posting, persona webhooks, per-guild options, post log.
    """
    ALTER TABLE schedules ADD COLUMN daily_times TEXT;      -- "09:00,18:30", or NULL for every interval_s
    ALTER TABLE schedules ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
    ALTER TABLE schedules ADD COLUMN last_run_at REAL;
    ALTER TABLE schedules ADD COLUMN pending_nonce TEXT;    -- set before a post, cleared after it
    ALTER TABLE schedules ADD COLUMN pending_since REAL;
    CREATE TABLE channel_webhooks (
        channel_id    INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        webhook_id    INTEGER NOT NULL,
        webhook_token TEXT    NOT NULL
    );
    CREATE TABLE guild_options (
        guild_id      INTEGER PRIMARY KEY,
        persona_webhooks INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE generated_posts (
        message_id    INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        channel_id    INTEGER NOT NULL,
        handle        TEXT    NOT NULL,
        requested_by  INTEGER,
        schedule_id   INTEGER,
        created_at    REAL    NOT NULL
    );
    CREATE INDEX generated_posts_guild ON generated_posts (guild_id, created_at);
    """,
    # 3: members' consent, their collected messages, and whose data went into each persona.
    """
    CREATE TABLE voice_consent (
        user_id       INTEGER PRIMARY KEY,
        opted_in      INTEGER NOT NULL,
        updated_at    REAL    NOT NULL
    );
    CREATE TABLE collected_messages (
        message_id    INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        user_id       INTEGER NOT NULL,
        channel_id    INTEGER NOT NULL,
        text          TEXT    NOT NULL
    );
    CREATE INDEX collected_messages_user ON collected_messages (guild_id, user_id);
    CREATE TABLE history_cursors (
        guild_id      INTEGER NOT NULL,
        user_id       INTEGER NOT NULL,
        channel_id    INTEGER NOT NULL,
        before_id     INTEGER,                    -- next page starts before this message
        finished      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, user_id, channel_id)
    );
    CREATE TABLE model_sources (
        guild_id      INTEGER NOT NULL,
        handle        TEXT    NOT NULL,
        user_id       INTEGER NOT NULL,
        PRIMARY KEY (guild_id, handle, user_id)
    );
    CREATE INDEX model_sources_user ON model_sources (user_id);
    CREATE TABLE guild_excluded_channels (
        guild_id      INTEGER NOT NULL,
        channel_id    INTEGER NOT NULL,
        PRIMARY KEY (guild_id, channel_id)
    );
    ALTER TABLE training_jobs ADD COLUMN source_user_id INTEGER;
    """,
    # 4: a schedule's refused posts in a row (schedules.MAX_FAILURES pause it).
    """
    ALTER TABLE schedules ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    """,
]


@dataclass
class ModelRecord:
    guild_id: int
    handle: str
    display_name: str
    base_model: str
    method: str
    path: str
    avatar_url: str | None = None
    status: str = "ready"
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_by: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    id: int | None = None


@dataclass
class JobRecord:
    id: int
    guild_id: int
    handle: str
    display_name: str
    avatar_url: str | None
    base_model: str
    method: str
    epochs: int
    requested_by: int | None
    channel_id: int | None
    stats: dict[str, Any]
    state: str
    progress: dict[str, Any]
    error: str | None
    interrupted: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    source_user_id: int | None = None  # a member whose messages are the corpus

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


_JOB_COLUMNS = (
    "id, guild_id, handle, display_name, avatar_url, base_model, method, epochs, requested_by, "
    "channel_id, stats_json, state, progress_json, error, interrupted, created_at, started_at, finished_at, "
    "source_user_id"
)
_MODEL_COLUMNS = (
    "id, guild_id, handle, display_name, avatar_url, base_model, method, path, status, "
    "stats_json, metrics_json, created_by, created_at, updated_at"
)


def _job(row: Iterable[Any]) -> JobRecord:
    r = list(row)
    return JobRecord(
        id=r[0], guild_id=r[1], handle=r[2], display_name=r[3], avatar_url=r[4], base_model=r[5],
        method=r[6], epochs=r[7], requested_by=r[8], channel_id=r[9], stats=json.loads(r[10]),
        state=r[11], progress=json.loads(r[12]), error=r[13], interrupted=r[14], created_at=r[15],
        started_at=r[16], finished_at=r[17], source_user_id=r[18],
    )


def _model(row: Iterable[Any]) -> ModelRecord:
    r = list(row)
    return ModelRecord(
        id=r[0], guild_id=r[1], handle=r[2], display_name=r[3], avatar_url=r[4], base_model=r[5],
        method=r[6], path=r[7], status=r[8], stats=json.loads(r[9]), metrics=json.loads(r[10]),
        created_by=r[11], created_at=r[12], updated_at=r[13],
    )


class Registry:
    """Async access to the SQLite registry. Open with `await Registry.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: str):
        self.db = db
        self.path = path

    @classmethod
    async def open(cls, path: str | Path) -> "Registry":
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        registry = cls(db, path)
        await registry._migrate()
        return registry

    async def close(self) -> None:
        await self.db.close()

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()
        return int(version)

    async def _migrate(self) -> None:
        current = await self.schema_version()
        for version, script in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            # executescript would COMMIT on its own; run statements inside one transaction instead.
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(script):
                    await self.db.execute(statement)
                await self.db.execute(f"PRAGMA user_version = {version}")
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def integrity_check(self) -> str:
        async with self.db.execute("PRAGMA integrity_check") as cur:
            (result,) = await cur.fetchone()
        return str(result)

    # -- models ---------------------------------------------------------------------------

    async def save_model(self, record: ModelRecord) -> ModelRecord:
        """Insert the model, or replace the guild's model of the same handle (retraining)."""
        now = time.time()
        record.created_at = record.created_at or now
        record.updated_at = now
        async with self.db.execute(
            """
            INSERT INTO models (guild_id, handle, display_name, avatar_url, base_model, method, path,
                                status, stats_json, metrics_json, created_by, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (guild_id, handle) DO UPDATE SET
                display_name = excluded.display_name, avatar_url = excluded.avatar_url,
                base_model = excluded.base_model, method = excluded.method, path = excluded.path,
                status = excluded.status, stats_json = excluded.stats_json,
                metrics_json = excluded.metrics_json, created_by = excluded.created_by,
                created_at = excluded.created_at, updated_at = excluded.updated_at
            RETURNING id
            """,
            (
                record.guild_id, record.handle, record.display_name, record.avatar_url,
                record.base_model, record.method, record.path, record.status,
                json.dumps(record.stats), json.dumps(record.metrics), record.created_by,
                record.created_at, record.updated_at,
            ),
        ) as cur:
            (record.id,) = await cur.fetchone()
        return record

    async def get_model(self, guild_id: int, handle: str) -> ModelRecord | None:
        async with self.db.execute(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE guild_id = ? AND handle = ?", (guild_id, handle)
        ) as cur:
            row = await cur.fetchone()
        return _model(row) if row else None

    async def list_models(self, guild_id: int) -> list[ModelRecord]:
        async with self.db.execute(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE guild_id = ? ORDER BY handle", (guild_id,)
        ) as cur:
            return [_model(row) for row in await cur.fetchall()]

    async def search_handles(self, guild_id: int, prefix: str, limit: int = 25) -> list[ModelRecord]:
        pattern = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self.db.execute(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE guild_id = ? AND status = 'ready' "
            "AND (handle LIKE ? ESCAPE '\\' OR lower(display_name) LIKE ? ESCAPE '\\') "
            "ORDER BY handle LIMIT ?",
            (guild_id, pattern, pattern, limit),
        ) as cur:
            return [_model(row) for row in await cur.fetchall()]

    async def delete_model(self, guild_id: int, handle: str) -> ModelRecord | None:
        """Remove the registry row (the caller removes the folder afterwards)."""
        async with self.db.execute(
            f"DELETE FROM models WHERE guild_id = ? AND handle = ? RETURNING {_MODEL_COLUMNS}",
            (guild_id, handle),
        ) as cur:
            row = await cur.fetchone()
        return _model(row) if row else None

    async def update_model_profile(
        self, guild_id: int, handle: str, *, display_name: str | None = None, avatar_url: str | None = None,
        clear_avatar: bool = False,
    ) -> ModelRecord | None:
        """Change how a persona is shown (name, picture); None if there is no such model."""
        async with self.db.execute(
            "UPDATE models SET display_name = coalesce(?, display_name), "
            "avatar_url = CASE WHEN ? THEN NULL ELSE coalesce(?, avatar_url) END, updated_at = ? "
            f"WHERE guild_id = ? AND handle = ? RETURNING {_MODEL_COLUMNS}",
            (display_name, int(clear_avatar), avatar_url, time.time(), guild_id, handle),
        ) as cur:
            row = await cur.fetchone()
        return _model(row) if row else None

    async def set_model_sources(self, guild_id: int, handle: str, user_ids: list[int]) -> None:
        """Record whose messages went into a persona (replacing what an earlier version used)."""
        await self.db.execute("DELETE FROM model_sources WHERE guild_id = ? AND handle = ?", (guild_id, handle))
        for user_id in user_ids:
            await self.db.execute("INSERT INTO model_sources (guild_id, handle, user_id) VALUES (?, ?, ?)",
                                  (guild_id, handle, user_id))

    async def all_model_paths(self) -> set[str]:
        async with self.db.execute("SELECT path FROM models") as cur:
            return {row[0] for row in await cur.fetchall()}

    # -- training jobs --------------------------------------------------------------------

    async def create_job(
        self,
        *,
        guild_id: int,
        handle: str,
        display_name: str,
        base_model: str,
        method: str,
        epochs: int,
        corpus: list[str],
        stats: dict[str, Any],
        avatar_url: str | None = None,
        requested_by: int | None = None,
        channel_id: int | None = None,
        source_user_id: int | None = None,
    ) -> JobRecord:
        async with self.db.execute(
            f"""
            INSERT INTO training_jobs (guild_id, handle, display_name, avatar_url, base_model, method,
                                       epochs, requested_by, channel_id, corpus_json, stats_json, created_at,
                                       source_user_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            RETURNING {_JOB_COLUMNS}
            """,
            (
                guild_id, handle, display_name, avatar_url, base_model, method, epochs, requested_by,
                channel_id, json.dumps(corpus, ensure_ascii=False), json.dumps(stats), time.time(), source_user_id,
            ),
        ) as cur:
            return _job(await cur.fetchone())

    async def claim_next_job(self) -> JobRecord | None:
        """Atomically move the oldest queued job to running and return it."""
        async with self.db.execute(
            f"""
            UPDATE training_jobs SET state = 'running', started_at = ?
            WHERE id = (SELECT id FROM training_jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
            RETURNING {_JOB_COLUMNS}
            """,
            (time.time(),),
        ) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def job_corpus(self, job_id: int) -> list[str]:
        async with self.db.execute("SELECT corpus_json FROM training_jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return json.loads(row[0]) if row else []

    async def update_job_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        await self.db.execute(
            "UPDATE training_jobs SET progress_json = ? WHERE id = ? AND state = 'running'",
            (json.dumps(progress), job_id),
        )

    async def finish_job(self, job_id: int, state: str, error: str | None = None) -> None:
        await self.db.execute(
            "UPDATE training_jobs SET state = ?, error = ?, finished_at = ?, corpus_json = '[]' "
            "WHERE id = ? AND state IN ('queued', 'running')",
            (state, error, time.time(), job_id),
        )

    async def cancel_queued_job(self, guild_id: int, job_id: int) -> bool:
        async with self.db.execute(
            "UPDATE training_jobs SET state = 'cancelled', finished_at = ?, corpus_json = '[]' "
            "WHERE id = ? AND guild_id = ? AND state = 'queued' RETURNING id",
            (time.time(), job_id, guild_id),
        ) as cur:
            return (await cur.fetchone()) is not None

    async def get_job(self, guild_id: int, job_id: int) -> JobRecord | None:
        async with self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM training_jobs WHERE id = ? AND guild_id = ?", (job_id, guild_id)
        ) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def list_jobs(self, guild_id: int, *, active_only: bool = False, limit: int = 20) -> list[JobRecord]:
        where = "guild_id = ?" + (" AND state IN ('queued', 'running')" if active_only else "")
        async with self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM training_jobs WHERE {where} ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        ) as cur:
            return [_job(row) for row in await cur.fetchall()]

    async def active_job_for_handle(self, guild_id: int, handle: str) -> JobRecord | None:
        async with self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM training_jobs WHERE guild_id = ? AND handle = ? "
            "AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
            (guild_id, handle),
        ) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def queue_position(self, job_id: int) -> int:
        """How many jobs run or wait before this one (0 = it is next or running)."""
        async with self.db.execute(
            "SELECT count(*) FROM training_jobs WHERE state IN ('queued', 'running') AND id < ?", (job_id,)
        ) as cur:
            (count,) = await cur.fetchone()
        return int(count)

    async def active_job_ids(self) -> set[int]:
        """Every guild's queued and running jobs (start-up clean-up of their checkpoints)."""
        async with self.db.execute("SELECT id FROM training_jobs WHERE state IN ('queued', 'running')") as cur:
            return {row[0] for row in await cur.fetchall()}

    async def requeue_interrupted_jobs(self) -> list[JobRecord]:
        """Jobs left 'running' by a process that died go back to the queue (start-up only)."""
        async with self.db.execute(
            f"UPDATE training_jobs SET state = 'queued', interrupted = interrupted + 1, started_at = NULL "
            f"WHERE state = 'running' RETURNING {_JOB_COLUMNS}"
        ) as cur:
            return [_job(row) for row in await cur.fetchall()]


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (ours contain no ';' inside literals)."""
    statements = []
    for chunk in script.split(";"):
        lines = [line.split("--", 1)[0] for line in chunk.splitlines()]
        text = "\n".join(lines).strip()
        if text:
            statements.append(text)
    return statements


class GuildData:
    """Small per-guild records used by the Discord adapter: webhooks, options, the post log."""

    def __init__(self, registry: Registry):
        self.db = registry.db

    async def webhook(self, channel_id: int) -> tuple[int, str] | None:
        async with self.db.execute(
            "SELECT webhook_id, webhook_token FROM channel_webhooks WHERE channel_id = ?", (channel_id,)
        ) as cur:
            row = await cur.fetchone()
        return (row[0], row[1]) if row else None

    async def save_webhook(self, guild_id: int, channel_id: int, webhook_id: int, token: str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO channel_webhooks (channel_id, guild_id, webhook_id, webhook_token) VALUES (?, ?, ?, ?)",
            (channel_id, guild_id, webhook_id, token),
        )

    async def forget_webhook(self, channel_id: int) -> None:
        await self.db.execute("DELETE FROM channel_webhooks WHERE channel_id = ?", (channel_id,))

    async def persona_webhooks(self, guild_id: int) -> bool:
        async with self.db.execute("SELECT persona_webhooks FROM guild_options WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    async def set_persona_webhooks(self, guild_id: int, enabled: bool) -> None:
        await self.db.execute(
            "INSERT INTO guild_options (guild_id, persona_webhooks) VALUES (?, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET persona_webhooks = excluded.persona_webhooks",
            (guild_id, int(enabled)),
        )

    async def record_post(self, *, message_id: int, guild_id: int, channel_id: int, handle: str,
                          requested_by: int | None = None, schedule_id: int | None = None) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO generated_posts (message_id, guild_id, channel_id, handle, requested_by, "
            "schedule_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (message_id, guild_id, channel_id, handle, requested_by, schedule_id, time.time()),
        )

    async def post(self, guild_id: int, message_id: int) -> dict[str, Any] | None:
        async with self.db.execute(
            "SELECT handle, requested_by, schedule_id, created_at, channel_id FROM generated_posts "
            "WHERE guild_id = ? AND message_id = ?", (guild_id, message_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return {"handle": row[0], "requested_by": row[1], "schedule_id": row[2], "created_at": row[3], "channel_id": row[4]}
