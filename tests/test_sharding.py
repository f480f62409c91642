"""The gateway sharded as Discord does it: the local server routes each guild to one shard
(`(guild_id >> 22) % num_shards`), refuses invalid shards (4010) and oversized sessions (4011),
and the real bot, with SHARD_COUNT/SHARD_IDS, runs the shards it is given."""

import aiohttp
import pytest

from bot.config import load_settings
from bot.discord.client import ShardedTweetalikeBot, TweetalikeBot, create_bot
from tests.discord_env import start_bot, stop_bot
from tests.localdiscord import MANAGE_GUILD, LocalDiscord, shard_of


def two_shard_guilds(server: LocalDiscord) -> tuple[int, int, int]:
    """A guild on shard 0 and one on shard 1 of 2, and an admin of both."""
    admin = server.add_user("admin")
    guilds = []
    for shard in (0, 1):
        guild = server.add_guild(f"g{shard}", on_shard=(shard, 2))
        server.add_member(guild, admin, [server.add_role(guild, "mods", MANAGE_GUILD)])
        guilds.append(guild)
    return guilds[0], guilds[1], admin


async def identify(server: LocalDiscord, shard) -> tuple[list[dict], int | None]:
    """A raw gateway client: IDENTIFY with `shard`; the dispatches received, and the close code."""
    events, data = [], {"token": server.token, "intents": 1, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    async with aiohttp.ClientSession() as http, http.ws_connect(server.gateway_url) as ws:
        await ws.receive_json()  # HELLO
        await ws.send_json({"op": 2, "d": data})
        while True:
            message = await ws.receive(timeout=30)
            if message.type != aiohttp.WSMsgType.TEXT:
                return events, ws.close_code
            events.append(message.json())
            if sum(e["t"] == "GUILD_CREATE" for e in events) == len(events[0]["d"]["guilds"]):
                return events, None


async def test_settings_pick_the_bot_class(settings):
    plain = create_bot(settings)
    sharded = create_bot(settings.replace(shard_count=4, shard_ids="1-2"))
    auto = create_bot(settings.replace(shard_count="auto"))
    try:
        assert type(plain) is TweetalikeBot and plain.guild_shards() is None  # the default stays unsharded
        assert isinstance(sharded, ShardedTweetalikeBot)
        assert (sharded.shard_count, sharded.shard_ids) == (4, [1, 2])
        assert auto.shard_count is None  # Discord recommends, at connection time
    finally:
        for bot in (plain, sharded, auto):  # never connected: only their cores hold threads
            await bot.core.close()
    assert load_settings({"SHARD_COUNT": "4", "SHARD_IDS": "0-1,3"}).shards == (0, 1, 3)


async def test_each_shard_session_gets_only_its_guilds():
    async with LocalDiscord() as server:
        g0, g1, _ = two_shard_guilds(server)
        for shard, guild in (([0, 2], g0), ([1, 2], g1)):
            events, closed = await identify(server, shard)
            ready = events[0]
            assert closed is None and ready["t"] == "READY" and ready["d"]["shard"] == shard
            assert [g["id"] for g in ready["d"]["guilds"]] == [str(guild)]
            assert [e["d"]["id"] for e in events[1:]] == [str(guild)]
        events, _ = await identify(server, None)  # unsharded: every guild
        assert {e["d"]["id"] for e in events[1:]} == {str(g0), str(g1)}


@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], [0], ["0", 2], "0,2"])
async def test_an_invalid_shard_is_refused_with_4010(shard):
    async with LocalDiscord() as server:
        two_shard_guilds(server)
        events, closed = await identify(server, shard)
        assert closed == 4010 and events == [] and server.closes == [4010]


async def test_a_session_over_the_guild_limit_must_shard():
    async with LocalDiscord(max_guilds_per_session=1) as server:
        two_shard_guilds(server)
        assert (await identify(server, None))[1] == 4011  # two guilds on one session: sharding required
        assert (await identify(server, [1, 2]))[1] is None  # one guild per shard is fine


async def test_sharded_bot_answers_each_guild_on_its_guilds_shard(settings):
    async with LocalDiscord() as server:
        g0, g1, admin = two_shard_guilds(server)
        server.add_guild("g0-too", on_shard=(0, 2))
        bot, task = await start_bot(server, settings.replace(shard_count=2))
        try:
            assert sorted(tuple(i["shard"]) for i in server.identifies) == [(0, 2), (1, 2)]
            assert {g.id for g in bot.guilds} == set(server.guilds)
            assert all(bot.get_guild(g).shard_id == shard_of(g, 2) for g in server.guilds)
            for guild, shard in ((g0, 0), (g1, 1)):
                reply = await (await server.slash(guild, admin, "models list")).answered()
                assert reply.delivered_to == [(shard, 2)] and reply.callback_attempts == 1
                assert "No personas yet" in reply.text()
        finally:
            await stop_bot(bot, task)
        assert server.unknown_routes == []


async def test_a_process_runs_only_its_shard_ids(settings):
    async with LocalDiscord() as server:
        g0, g1, admin = two_shard_guilds(server)
        bot, task = await start_bot(server, settings.replace(shard_count=2, shard_ids="1"))
        try:
            assert [i["shard"] for i in server.identifies] == [[1, 2]]
            assert [g.id for g in bot.guilds] == [g1] and bot.guild_shards().owns(g1)
            assert not bot.guild_shards().owns(g0)
            reply = await (await server.slash(g1, admin, "models list")).answered()
            assert reply.delivered_to == [(1, 2)]
            unserved = await server.slash(g0, admin, "models list")
            assert unserved.delivered_to == []  # shard 0 is another process's: nobody here sees it
        finally:
            await stop_bot(bot, task)


async def test_auto_takes_discords_recommended_shard_count(settings):
    async with LocalDiscord() as server:
        two_shard_guilds(server)
        server.recommended_shards = 2
        bot, task = await start_bot(server, settings.replace(shard_count="auto"))
        try:
            assert bot.shard_count == 2 and bot.guild_shards().ids == (0, 1)
            assert sorted(i["shard"][0] for i in server.identifies) == [0, 1]
        finally:
            await stop_bot(bot, task)
