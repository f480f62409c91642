import sqlite3

import pytest

from bot.core.registry import MIGRATIONS, ModelRecord, Registry, RegistryError, normalize_handle


@pytest.fixture
async def registry(tmp_path):
    reg = await Registry.open(tmp_path / "db" / "bot.db")
    yield reg
    await reg.close()


def model(guild_id: int, handle: str, **kw) -> ModelRecord:
    return ModelRecord(guild_id=guild_id, handle=handle, display_name=handle.title(), base_model="gpt2",
                       method="lora", path=f"{guild_id}/{handle}", **kw)


async def test_migrations_applied_and_wal(registry, tmp_path):
    assert await registry.schema_version() == len(MIGRATIONS)
    async with registry.db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"
    assert await registry.integrity_check() == "ok"
    # Re-opening an up-to-date database applies nothing and keeps the data.
    await registry.save_model(model(1, "alice"))
    again = await Registry.open(registry.path)
    assert [m.handle for m in await again.list_models(1)] == ["alice"]
    await again.close()


async def test_models_are_scoped_by_guild(registry):
    await registry.save_model(model(1, "alice", stats={"kept": 10}))
    await registry.save_model(model(2, "bob"))
    assert [m.handle for m in await registry.list_models(1)] == ["alice"]
    assert await registry.get_model(2, "alice") is None
    assert await registry.delete_model(2, "alice") is None
    assert await registry.get_model(1, "alice") is not None
    assert [m.handle for m in await registry.search_handles(2, "")] == ["bob"]
    assert (await registry.get_model(1, "alice")).stats == {"kept": 10}


async def test_retraining_replaces_the_row(registry):
    first = await registry.save_model(model(1, "alice", metrics={"val_loss": 3.0}))
    second = await registry.save_model(model(1, "alice", metrics={"val_loss": 2.0}))
    assert first.id == second.id
    assert (await registry.get_model(1, "alice")).metrics == {"val_loss": 2.0}


async def test_search_handles_escapes_like_wildcards(registry):
    await registry.save_model(model(1, "a_b"))
    await registry.save_model(model(1, "axb"))
    assert [m.handle for m in await registry.search_handles(1, "a_")] == ["a_b"]
    assert await registry.search_handles(1, "%") == []


async def test_job_lifecycle_and_restart_recovery(registry):
    job = await registry.create_job(guild_id=1, handle="alice", display_name="Alice", base_model="gpt2",
                                    method="lora", epochs=4, corpus=["one", "two"], stats={"kept": 2})
    assert job.state == "queued"
    assert (await registry.active_job_for_handle(1, "alice")).id == job.id
    claimed = await registry.claim_next_job()
    assert claimed.id == job.id and claimed.state == "running"
    assert await registry.claim_next_job() is None
    # A crash leaves it running; the next start puts it back in the queue.
    recovered = await registry.requeue_interrupted_jobs()
    assert [j.id for j in recovered] == [job.id]
    again = await registry.get_job(1, job.id)
    assert again.state == "queued" and again.interrupted == 1
    assert await registry.job_corpus(job.id) == ["one", "two"]
    await registry.claim_next_job()
    await registry.finish_job(job.id, "done")
    done = await registry.get_job(1, job.id)
    assert done.state == "done" and done.finished_at
    assert await registry.job_corpus(job.id) == []  # the corpus is not kept after training
    assert await registry.get_job(2, job.id) is None  # other guilds cannot see it


async def test_cancel_queued_job_is_guild_scoped(registry):
    job = await registry.create_job(guild_id=1, handle="alice", display_name="Alice", base_model="gpt2",
                                    method="lora", epochs=4, corpus=["x"], stats={})
    assert not await registry.cancel_queued_job(2, job.id)
    assert await registry.cancel_queued_job(1, job.id)
    assert (await registry.get_job(1, job.id)).state == "cancelled"


async def test_database_file_is_real_sqlite(registry):
    await registry.save_model(model(5, "carol"))
    con = sqlite3.connect(registry.path)
    assert con.execute("SELECT handle FROM models WHERE guild_id = 5").fetchall() == [("carol",)]
    con.close()


@pytest.mark.parametrize("raw,expected", [("@JS_Thrill", "js_thrill"), ("  bob ", "bob"), ("a-b", "a-b"), ("a-b-c", "a-b-c")])
def test_normalize_handle_accepts(raw, expected):
    assert normalize_handle(raw) == expected


@pytest.mark.parametrize("raw", ["", "has space", "😀", "../etc", "a" * 200, "x'; DROP TABLE models;--", "@everyone!", "a-b-c-d", "a/b", "."])
def test_normalize_handle_refuses(raw):
    with pytest.raises(RegistryError):
        normalize_handle(raw)
