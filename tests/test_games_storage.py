"""/realorfake's rounds and votes on both dialects: one vote per member, a round closed once, the
scores counted per server, and the v8 -> v9 upgrade."""

import pytest

from bot.core.storage import SCHEMA_VERSION, GameRound, Storage
from bot.core.storage.migrations import write_version


@pytest.fixture
async def storage(db_url):
    opened = await Storage.open(db_url)
    yield opened
    await opened.close()


def new_round(guild_id=1, handle="alice", is_real=False, channel_id=10, opened_at=100.0) -> GameRound:
    return GameRound(
        id=0,
        guild_id=guild_id,
        channel_id=channel_id,
        handle=handle,
        is_real=is_real,
        post="a post",
        opened_at=opened_at,
        closes_at=opened_at + 60,
    )


async def test_votes_close_and_scores(storage):
    games = storage.games
    fake = await games.open(new_round())
    assert await games.vote(1, fake.id, 7, True, 110.0) == "counted"
    assert await games.vote(1, fake.id, 7, False, 111.0) == "again"  # one vote per member
    assert await games.vote(2, fake.id, 8, True, 111.0) == "missing"  # another server's round
    assert await games.vote(1, fake.id, 8, False, 112.0) == "counted"
    assert await games.vote(1, fake.id, 9, True, 200.0) == "closed"  # its time is up
    assert [r.id for r in await games.due(200.0)] == [fake.id]
    closed = await games.close(1, fake.id, 200.0)
    assert (closed.real_votes, closed.generated_votes) == (1, 1)
    assert await games.close(1, fake.id, 201.0) is None  # closed once, whoever comes second
    assert await games.due(300.0) == []

    real = await games.open(new_round(is_real=True, opened_at=300.0))
    await games.vote(1, real.id, 7, True, 310.0)
    await games.close(1, real.id, 320.0)
    members = {s.key: (s.hits, s.votes) for s in await games.members(1)}
    assert members == {7: (1, 2), 8: (1, 1)}
    [persona] = await games.fool_rates(1)
    assert (persona.key, persona.hits, persona.votes, persona.rate) == ("alice", 1, 2, 0.5)
    assert await games.members(2) == [] and await games.fool_rates(2) == []

    await games.forget_member(7)
    assert {s.key for s in await games.members(1)} == {8}
    assert await games.delete_for_persona(1, "alice") == 2
    assert await games.last_in_channel(10) is None and await games.members(1) == []


async def test_a_version_8_database_gains_the_game_tables(storage, db_url):
    async with storage.db.write() as conn:
        for table in ("game_votes", "game_rounds"):
            await conn.exec_driver_sql(f"DROP TABLE {table}")
        await conn.run_sync(write_version, 8)
    await storage.close()
    again = await Storage.open(db_url)
    try:
        assert await again.schema_version() == SCHEMA_VERSION
        opened = await again.games.open(new_round())
        assert (await again.games.get(1, opened.id)).post == "a post"
    finally:
        await again.close()
