"""The storage layer on both dialects: a SQLite file (the default) and a real PostgreSQL server."""

import asyncio
import sqlite3

import pytest

from bot.core.handles import RegistryError, normalize_handle
from bot.core.storage import SCHEMA_VERSION, ModelRecord, Schedule, Storage, database_url
from bot.core.storage.migrations import write_version


@pytest.fixture
async def storage(db_url):
    opened = await Storage.open(db_url)
    yield opened
    await opened.close()


def model(guild_id: int, handle: str, **kw) -> ModelRecord:
    return ModelRecord(
        guild_id=guild_id,
        handle=handle,
        display_name=handle.title(),
        base_model="gpt2",
        method="lora",
        path=f"{guild_id}/{handle}",
        **kw,
    )


async def new_job(storage: Storage, guild_id: int = 1, handle: str = "alice", corpus=("one", "two")):
    return await storage.jobs.create(
        guild_id=guild_id,
        handle=handle,
        display_name=handle.title(),
        base_model="gpt2",
        method="lora",
        epochs=4,
        corpus=list(corpus),
        stats={"kept": len(corpus)},
    )


async def test_migrations_applied_and_reopening_keeps_data(storage, db_url):
    assert await storage.schema_version() == SCHEMA_VERSION
    assert await storage.integrity_check() == "ok"
    if storage.dialect == "sqlite":
        assert await storage.db.journal_mode() == "wal"
    # Re-opening an up-to-date database applies nothing and keeps the data.
    await storage.models.save(model(1, "alice"))
    again = await Storage.open(db_url)
    assert [m.handle for m in await again.models.list(1)] == ["alice"]
    assert await again.schema_version() == SCHEMA_VERSION
    await again.close()


async def test_models_are_scoped_by_guild(storage):
    snowflake = 1_234_567_890_123_456_789  # Discord ids need 64 bits
    await storage.models.save(model(1, "alice", stats={"kept": 10}))
    await storage.models.save(model(snowflake, "bob", created_by=snowflake))
    assert [m.handle for m in await storage.models.list(1)] == ["alice"]
    assert await storage.models.get(snowflake, "alice") is None
    assert await storage.models.delete(snowflake, "alice") is None
    assert await storage.models.get(1, "alice") is not None
    assert [m.handle for m in await storage.models.search(snowflake, "")] == ["bob"]
    assert (await storage.models.get(snowflake, "bob")).created_by == snowflake
    assert (await storage.models.get(1, "alice")).stats == {"kept": 10}


async def test_retraining_replaces_the_row(storage):
    first = await storage.models.save(model(1, "alice", metrics={"val_loss": 3.0}))
    second = await storage.models.save(model(1, "alice", metrics={"val_loss": 2.0}))
    assert first.id == second.id
    assert (await storage.models.get(1, "alice")).metrics == {"val_loss": 2.0}


async def test_profile_update_changes_name_and_picture_in_its_guild_only(storage):
    await storage.models.save(model(1, "alice", avatar_url="https://example.com/a.png"))
    assert await storage.models.update_profile(2, "alice", display_name="Other") is None
    renamed = await storage.models.update_profile(1, "alice", display_name="Alice B")
    assert (renamed.display_name, renamed.avatar_url) == ("Alice B", "https://example.com/a.png")
    pictured = await storage.models.update_profile(1, "alice", avatar_url="https://example.com/b.png")
    assert (pictured.display_name, pictured.avatar_url) == ("Alice B", "https://example.com/b.png")
    cleared = await storage.models.update_profile(1, "alice", clear_avatar=True)
    assert cleared.avatar_url is None and (await storage.models.get(1, "alice")).avatar_url is None


async def test_version_3_database_gains_the_failures_column(storage, db_url):
    """Upgrades 4 and 5 (add_column) on the dialect at hand: a version-3 database had no `failures`
    and no claim columns."""
    draft = Schedule(id=0, guild_id=1, handle="alice", channel_id=10, interval_s=3600, next_run_at=5.0)
    await storage.schedules.add(draft)
    async with storage.db.write() as conn:
        for column in ("failures", "claimed_by", "claimed_until"):  # v4, v6
            await conn.exec_driver_sql(f"ALTER TABLE schedules DROP COLUMN {column}")
        for column in ("worker", "cancel_requested", "resume_step", "announced", "resumes_told"):  # v5
            await conn.exec_driver_sql(f"ALTER TABLE training_jobs DROP COLUMN {column}")
        await conn.exec_driver_sql("DROP TABLE blobs")
        for table in ("chatter_settings", "chatter_answers"):  # v7
            await conn.exec_driver_sql(f"DROP TABLE {table}")
        await conn.exec_driver_sql("ALTER TABLE generated_posts DROP COLUMN answered_message_id")
        await conn.run_sync(write_version, 3)
    await storage.close()
    again = await Storage.open(db_url)
    try:
        assert await again.schema_version() == SCHEMA_VERSION
        [schedule] = await again.schedules.list(1)
        assert schedule.failures == 0
        assert await again.schedules.failed(schedule.id, 10.0) == 1
        assert (await new_job(again)).announced == 0 and await again.blobs.get("none") is None  # upgrade 5
        claimed = await again.schedules.claim_due(20.0, owner="a", lease_until=30.0)
        assert [s.id for s in claimed] == [schedule.id]
    finally:
        await again.close()


async def test_search_escapes_like_wildcards(storage):
    await storage.models.save(model(1, "a_b"))
    await storage.models.save(model(1, "axb"))
    assert [m.handle for m in await storage.models.search(1, "a_")] == ["a_b"]
    assert await storage.models.search(1, "%") == []


async def test_job_lifecycle_and_restart_recovery(storage):
    job = await new_job(storage)
    assert job.state == "queued"
    assert (await storage.jobs.active_for_handle(1, "alice")).id == job.id
    claimed = await storage.jobs.claim_next()
    assert claimed.id == job.id and claimed.state == "running"
    assert await storage.jobs.claim_next() is None
    # A crash leaves it running; the next start puts it back in the queue.
    recovered = await storage.jobs.requeue_interrupted()
    assert [j.id for j in recovered] == [job.id]
    again = await storage.jobs.get(1, job.id)
    assert again.state == "queued" and again.interrupted == 1
    assert await storage.jobs.corpus(job.id) == ["one", "two"]
    await storage.jobs.claim_next()
    await storage.jobs.finish(job.id, "done")
    done = await storage.jobs.get(1, job.id)
    assert done.state == "done" and done.finished_at
    assert await storage.jobs.corpus(job.id) == []  # the corpus is not kept after training
    assert await storage.jobs.get(2, job.id) is None  # other guilds cannot see it


async def test_claims_from_two_connections_take_each_job_once(storage, db_url):
    """Two processes' queues on one database: every job is claimed exactly once, oldest first."""
    other = await Storage.open(db_url)
    try:
        created = [await new_job(storage, handle=f"p{i}") for i in range(8)]
        claims = await asyncio.gather(*(s.jobs.claim_next() for _ in range(6) for s in (storage, other)))
        claimed = sorted(job.id for job in claims if job is not None)
        assert claimed == [job.id for job in created]
        assert await storage.jobs.active_count() == 8 and await storage.jobs.claim_next() is None
    finally:
        await other.close()


async def test_cancel_queued_job_is_guild_scoped(storage):
    job = await new_job(storage, corpus=["x"])
    assert not await storage.jobs.cancel_queued(2, job.id)
    assert await storage.jobs.cancel_queued(1, job.id)
    assert (await storage.jobs.get(1, job.id)).state == "cancelled"
    assert await storage.jobs.position(job.id + 1) == 0


async def test_model_sources_and_guild_records(storage):
    await storage.models.set_sources(1, "alice", [7])
    await storage.models.set_sources(2, "alice", [7])
    assert await storage.models.using(7) == [(1, "alice"), (2, "alice")]
    await storage.models.forget_sources(7, guild_id=1)
    assert await storage.models.using(7) == [(2, "alice")]
    await storage.guilds.set_persona_webhooks(1, True)
    assert await storage.guilds.persona_webhooks(1) and not await storage.guilds.persona_webhooks(2)
    await storage.guilds.save_webhook(1, 10, 555, "token")
    await storage.guilds.save_webhook(1, 10, 556, "token2")
    assert await storage.guilds.webhook(10) == (556, "token2")
    await storage.guilds.record_post(
        message_id=900, guild_id=1, channel_id=10, handle="alice", requested_by=7
    )
    assert (await storage.guilds.post(1, 900)).handle == "alice"
    assert await storage.guilds.post(2, 900) is None


async def test_database_file_is_real_sqlite(tmp_path):
    path = tmp_path / "bot.db"
    storage = await Storage.open(database_url("", path))
    await storage.models.save(model(5, "carol"))
    await storage.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT handle FROM models WHERE guild_id = 5").fetchall() == [("carol",)]
    assert con.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    con.close()


async def test_a_first_release_sqlite_file_is_upgraded(tmp_path):
    """A database written by the first schema (version 1) gains the later tables and columns."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE models (id INTEGER PRIMARY KEY, guild_id INTEGER NOT NULL, handle TEXT NOT NULL,
            display_name TEXT NOT NULL, avatar_url TEXT, base_model TEXT NOT NULL, method TEXT NOT NULL,
            path TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'ready', stats_json TEXT NOT NULL DEFAULT '{}',
            metrics_json TEXT NOT NULL DEFAULT '{}', created_by INTEGER, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, UNIQUE (guild_id, handle));
        CREATE TABLE training_jobs (id INTEGER PRIMARY KEY, guild_id INTEGER NOT NULL, handle TEXT NOT NULL,
            display_name TEXT NOT NULL, avatar_url TEXT, base_model TEXT NOT NULL, method TEXT NOT NULL,
            epochs INTEGER NOT NULL, requested_by INTEGER, channel_id INTEGER, corpus_json TEXT NOT NULL,
            stats_json TEXT NOT NULL DEFAULT '{}', state TEXT NOT NULL DEFAULT 'queued',
            progress_json TEXT NOT NULL DEFAULT '{}', error TEXT, interrupted INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL);
        CREATE TABLE schedules (id INTEGER PRIMARY KEY, guild_id INTEGER NOT NULL, handle TEXT NOT NULL,
            channel_id INTEGER NOT NULL, interval_s INTEGER NOT NULL, jitter_s INTEGER NOT NULL DEFAULT 0,
            prompt TEXT NOT NULL DEFAULT '', next_run_at REAL NOT NULL, paused INTEGER NOT NULL DEFAULT 0,
            pause_reason TEXT, created_by INTEGER, created_at REAL NOT NULL);
        INSERT INTO models (guild_id, handle, display_name, base_model, method, path, created_at, updated_at)
            VALUES (1, 'old', 'Old', 'gpt2', 'lora', '1/old', 0, 0);
        PRAGMA user_version = 1;
    """)
    con.close()
    storage = await Storage.open(database_url("", path))
    try:
        assert await storage.schema_version() == SCHEMA_VERSION
        assert [m.handle for m in await storage.models.list(1)] == ["old"]
        job = await new_job(storage)
        assert job.source_user_id is None
        assert await storage.models.using(1) == []
    finally:
        await storage.close()


@pytest.mark.parametrize(
    "raw,expected", [("@JS_Thrill", "js_thrill"), ("  bob ", "bob"), ("a-b", "a-b"), ("a-b-c", "a-b-c")]
)
def test_normalize_handle_accepts(raw, expected):
    assert normalize_handle(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "has space",
        "😀",
        "../etc",
        "a" * 200,
        "x'; DROP TABLE models;--",
        "@everyone!",
        "a-b-c-d",
        "a/b",
        ".",
    ],
)
def test_normalize_handle_refuses(raw):
    with pytest.raises(RegistryError):
        normalize_handle(raw)


async def test_chatter_settings_and_answer_claims(storage):
    from bot.core.storage import ChatterSetting

    setting = ChatterSetting(guild_id=1, channel_id=10, handle="alice", rate=0.5, cooldown_s=60, updated_by=7)
    await storage.chatter.save(setting)
    await storage.chatter.save(
        ChatterSetting(guild_id=1, channel_id=10, handle="alice", rate=1, cooldown_s=5)
    )
    await storage.chatter.save(ChatterSetting(guild_id=2, channel_id=20, handle="bob", rate=0, cooldown_s=0))
    (saved,) = await storage.chatter.list(1)
    assert (saved.rate, saved.cooldown_s, saved.allow_personas, saved.updated_by) == (1.0, 5, False, None)
    claim = dict(guild_id=1, channel_id=10, handle="alice", kind="chime", now=1000.0, gap_s=60)
    assert await storage.chatter.claim(message_id=1, **claim)
    assert not await storage.chatter.claim(message_id=1, **{**claim, "kind": "reply", "gap_s": 0})  # once
    assert not await storage.chatter.claim(message_id=2, **{**claim, "now": 1059.0})  # inside the gap
    assert await storage.chatter.claim(message_id=3, **{**claim, "kind": "reply", "gap_s": 0, "now": 1001.0})
    assert await storage.chatter.claim(message_id=4, **{**claim, "now": 1060.0})
    # Persona-to-persona answers: at most `persona_cap` per guild per hour.
    loop = dict(claim, kind="reply", gap_s=0, to_persona=True, persona_cap=2)
    results = [
        await storage.chatter.claim(message_id=100 + i, **{**loop, "now": 2000.0 + i}) for i in range(4)
    ]
    assert results == [True, True, False, False]
    assert await storage.chatter.claim(message_id=200, **{**loop, "now": 2000.0 + 3601})
    # A claim a day old is pruned; the message could then be claimed again (it is long gone by then).
    assert await storage.chatter.claim(message_id=1, **{**claim, "now": 1000.0 + 2 * 86400})
    assert await storage.chatter.remove(1, 10) == 1
    assert await storage.chatter.list(1) == [] and len(await storage.chatter.list(2)) == 1
    await storage.guilds.record_post(
        message_id=5, guild_id=1, channel_id=10, handle="alice", answered_message_id=4
    )
    assert (await storage.guilds.post(1, 5)).answered_message_id == 4


async def test_chatter_claims_race_between_processes(db_url):
    """Two processes (two engines on one database) claim the same messages: each is taken once."""
    first, second = await Storage.open(db_url), await Storage.open(db_url)
    try:
        claim = dict(guild_id=1, channel_id=10, handle="alice", kind="chime", now=1000.0, gap_s=0)
        results = await asyncio.gather(
            *(s.chatter.claim(message_id=m, **claim) for m in range(20) for s in (first, second))
        )
        assert sum(results) == 20
        gap = dict(claim, channel_id=11, gap_s=300)
        results = await asyncio.gather(
            *(s.chatter.claim(message_id=100 + m, **gap) for m in range(10) for s in (first, second))
        )
        assert sum(results) == 1  # one chime-in per gap, whichever process won
    finally:
        await first.close()
        await second.close()


async def test_a_version_6_database_gains_the_chatter_tables(db_url):
    storage = await Storage.open(db_url)
    await storage.guilds.record_post(message_id=1, guild_id=1, channel_id=2, handle="alice")
    async with storage.db.write() as conn:
        await conn.exec_driver_sql("DROP TABLE chatter_settings")
        await conn.exec_driver_sql("DROP TABLE chatter_answers")
        await conn.exec_driver_sql("ALTER TABLE generated_posts DROP COLUMN answered_message_id")
        await conn.run_sync(write_version, 6)
    await storage.close()
    storage = await Storage.open(db_url)
    try:
        assert await storage.schema_version() == SCHEMA_VERSION
        assert (await storage.guilds.post(1, 1)).answered_message_id is None
        assert await storage.chatter.list(1) == []
    finally:
        await storage.close()
