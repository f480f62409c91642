"""service.voices: personas from members' own data packages, whose data went where, erasure, and
the migration that erased the text the bot once collected."""

import asyncio

import pytest
from sqlalchemy import inspect

from bot.core.errors import UserError
from bot.core.service import PersonaService
from bot.core.storage import SCHEMA_VERSION, Storage
from bot.core.storage.migrations import COLLECTED_HISTORY_TABLES, write_version
from tests.conftest import TINY_CORPUS, on_finished, tiny_tweets
from tests.discord_package import OTHER_SERVER, SECRET_DM, build_package, member_channels

STATS = {"downloaded": 400, "retweets": 0, "short": 0, "duplicates": 0, "kept": 400}
MEMBER, OTHER_MEMBER = 4242, 5151
GUILD, GUILD2 = 1, 2


async def until_finished(core: PersonaService, job_id: int):
    done = asyncio.get_running_loop().create_future()
    on_finished(
        core, lambda outcome: outcome.job.id == job_id and not done.done() and done.set_result(outcome)
    )
    outcome = await asyncio.wait_for(done, 120)
    assert outcome.state == "done", outcome.error
    return outcome


async def train_own(core: PersonaService, guild_id: int, handle: str, **kw):
    queued = await core.voices.train_from_package(
        guild_id=guild_id,
        member_id=MEMBER,
        handle=handle,
        data=build_package(member_channels(guild_id, other_guild=99), owner_id=MEMBER),
        filename="package.zip",
        **kw,
    )
    await until_finished(core, queued.job.id)
    return queued


async def test_a_member_trains_on_their_package_and_opts_out_everywhere(settings):
    core = PersonaService(settings)
    await core.start()
    try:
        mine = await train_own(core, GUILD, "member_one")
        assert mine.job.source_user_id == MEMBER and mine.job.requested_by == MEMBER
        assert not any(SECRET_DM in t for t in mine.result.tweets)
        assert any(OTHER_SERVER in t for t in mine.result.tweets)  # every server's channels by default
        here = await train_own(core, GUILD2, "member_two", this_server_only=True)
        assert not any(OTHER_SERVER in t for t in here.result.tweets)
        model = await core.get_model(GUILD, "member_one")
        assert model.stats["commands"] > 0 and model.stats["links"] > 0  # the data table, as shown
        other = await core.trainings.submit(
            guild_id=GUILD, handle="someone_else", tweets=tiny_tweets(), stats=STATS
        )
        await until_finished(core, other.id)
        assert await core.voices.personas_using(MEMBER, GUILD) == [(GUILD, "member_one")]
        await core.schedules.add(guild_id=GUILD2, handle="member_two", channel_id=5, every="1h")

        report = await core.voices.opt_out(MEMBER)
        assert sorted(report.personas) == [(GUILD, "member_one"), (GUILD2, "member_two")]
        assert report.schedules == 1
        assert [m.handle for m in await core.list_models(GUILD)] == ["someone_else"]
        assert await core.list_models(GUILD2) == [] and await core.voices.personas_using(MEMBER) == []
        assert not (core.store.root / str(GUILD) / "member_one").exists()
    finally:
        await core.close()


async def test_only_the_owner_trains_on_a_package(settings):
    core = PersonaService(settings)
    await core.start(run_queue=False)
    try:
        await core.trainings.submit(guild_id=GUILD, handle="alice", tweets=tiny_tweets(), stats=STATS)
        await core.storage.models.save(_model(GUILD, "bob"))
        package = build_package(member_channels(GUILD), owner_id=MEMBER)
        attempts = [
            (dict(member_id=OTHER_MEMBER, data=package), "belongs to another account"),
            (dict(member_id=MEMBER, data=TINY_CORPUS.read_bytes()), "not a Discord data package"),
            (dict(member_id=MEMBER, data=package, handle="bob"), "another persona here"),
            (dict(member_id=MEMBER, data=package, handle="alice"), "already queued or training"),
        ]
        for options, needle in attempts:
            with pytest.raises(UserError, match=needle):
                await core.voices.train_from_package(
                    guild_id=GUILD, **{"handle": "mine", "filename": "package.zip", **options}
                )
        assert [j.handle for j in await core.trainings.list(GUILD)] == ["alice"]
        # A messages folder zipped alone does not say whose it is: its uploader's word is taken.
        alone = build_package(member_channels(GUILD), messages_only=True)
        queued = await core.voices.train_from_package(
            guild_id=GUILD, member_id=OTHER_MEMBER, handle="mine", data=alone, filename="messages.zip"
        )
        assert queued.result.owner_id is None and queued.job.source_user_id == OTHER_MEMBER
    finally:
        await core.close()


def _model(guild_id: int, handle: str):
    from bot.core.storage import ModelRecord

    return ModelRecord(
        guild_id=guild_id,
        handle=handle,
        display_name=handle,
        avatar_url=None,
        base_model="gpt2",
        method="lora",
        path=f"{guild_id}/{handle}",
    )


async def test_erase_in_one_guild_only_and_cancels_pending_training(settings):
    core = PersonaService(settings)
    await core.start(run_queue=False)
    try:
        here = await core.trainings.submit(
            guild_id=GUILD, handle="pending", tweets=tiny_tweets(), stats=STATS, source_user_id=MEMBER
        )
        there = await core.trainings.submit(
            guild_id=GUILD2, handle="pending", tweets=tiny_tweets(), stats=STATS, source_user_id=MEMBER
        )
        report = await core.voices.erase(MEMBER, guild_id=GUILD)
        assert report.jobs_cancelled == 1
        assert (await core.storage.jobs.get(GUILD, here.id)).state == "cancelled"
        assert (await core.storage.jobs.get(GUILD2, there.id)).state == "queued"
    finally:
        await core.close()


async def test_the_migration_erases_collected_history_and_keeps_personas(db_url):
    """A database from before: collected messages, cursors, consent and excluded channels go;
    a persona trained on collected history stays, and /voice optout still finds it."""
    storage = await Storage.open(db_url)
    async with storage.db.write() as conn:
        for statement in OLD_TABLES:
            await conn.exec_driver_sql(statement)
        await conn.run_sync(write_version, 7)
    await storage.models.save(_model(GUILD, "from_history"))
    await storage.models.set_sources(GUILD, "from_history", [MEMBER])
    await storage.close()

    storage = await Storage.open(db_url)
    try:
        assert await storage.schema_version() == SCHEMA_VERSION  # migrated through 8 and onward
        async with storage.db.read() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert not tables & set(COLLECTED_HISTORY_TABLES)
        assert await storage.models.using(MEMBER) == [(GUILD, "from_history")]
    finally:
        await storage.close()


OLD_TABLES = [
    "CREATE TABLE IF NOT EXISTS voice_consent (user_id BIGINT PRIMARY KEY, opted_in INTEGER NOT NULL, "
    "updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS collected_messages (message_id BIGINT PRIMARY KEY, guild_id BIGINT NOT NULL, "
    "user_id BIGINT NOT NULL, channel_id BIGINT NOT NULL, text TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history_cursors (guild_id BIGINT NOT NULL, user_id BIGINT NOT NULL, "
    "channel_id BIGINT NOT NULL, before_id BIGINT, finished INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY (guild_id, user_id, channel_id))",
    "CREATE TABLE IF NOT EXISTS guild_excluded_channels (guild_id BIGINT NOT NULL, "
    "channel_id BIGINT NOT NULL, PRIMARY KEY (guild_id, channel_id))",
    f"INSERT INTO collected_messages VALUES (1, {GUILD}, {MEMBER}, 10, 'collected words')",
    f"INSERT INTO voice_consent VALUES ({MEMBER}, 1, 0)",
]
