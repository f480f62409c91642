"""/realorfake through the real discord.py client and the local server, with several members voting."""

import asyncio
import random

from tests.discord_env import start_bot, stop_bot
from tests.test_discord_bot import train


def vote_ids(message: dict) -> dict[str, str]:
    buttons = [c for row in message["components"] for c in row["components"]]
    return {b["label"]: b["custom_id"] for b in buttons}


async def revealed(server, channel: int, message_id: str, timeout: float = 30) -> dict:
    return await server.wait_for_message(
        channel,
        lambda m: m["id"] == message_id and m["embeds"] and "The answer" in m["embeds"][0]["title"],
        timeout=timeout,
    )


async def play(env, handle="alice", user=None):
    reply = await env.server.slash(env.guild, user or env.member, "realorfake play", handle=handle)
    return await reply.wait(lambda i: i.original and i.original.get("components"), timeout=60)


async def test_a_round_takes_one_vote_per_member_then_reveals_and_scores(discord_env, settings):
    env, server = discord_env, discord_env.server
    await train(env)
    await stop_bot(env.bot, env.task)
    quick = settings.replace(realorfake_votes_to_close=3, realorfake_channel_gap_seconds=0)
    env.bot, env.task = await start_bot(server, quick, env.clock)
    voters = [env.member, env.admin]
    for name in ("carol", "dave"):
        voters.append(server.add_user(name))
        server.add_member(env.guild, voters[-1])

    shown = await play(env)
    message = shown.original
    embed = message["embeds"][0]
    assert "game" in embed["title"] and embed["description"].strip() and "@alice" in embed["footer"]["text"]
    ids = vote_ids(message)
    assert set(ids) == {"Real", "Generated"}

    first = await (await server.click(env.guild, env.member, message, vote_ids(message)["Real"])).answered()
    assert first.ephemeral and "counted" in first.text()
    again = await (
        await server.click(env.guild, env.member, message, vote_ids(message)["Generated"])
    ).answered()
    assert again.ephemeral and "already voted" in again.text()
    # A second round cannot start while this one is open.
    busy = await (await server.slash(env.guild, env.admin, "realorfake play", handle="alice")).answered()
    assert "still open" in busy.text() and busy.ephemeral, (busy.callback, busy.original)

    for voter in voters[1:3]:
        await (await server.click(env.guild, voter, message, vote_ids(message)["Generated"])).answered()
    answer = await revealed(server, int(message["channel_id"]), message["id"])
    assert answer["components"] == []
    it_was = answer["embeds"][0]["fields"][0]["value"]
    assert "real" in it_was or "generated" in it_was
    assert "Real 1 · Generated 2" in answer["embeds"][0]["fields"][1]["value"]
    # The buttons are gone; a vote that still arrives (a click in flight) is refused.
    round_id = int(ids["Real"].split(":")[1])
    late = await env.bot.core.games.vote(env.guild, round_id, voters[3], "real")
    assert late.outcome == "closed"

    board = await (await server.slash(env.guild, env.member, "realorfake leaderboard")).answered()
    assert board.ephemeral and f"<@{env.member}>" in str(board.callback)
    elsewhere = await (
        await server.slash(env.other_guild, env.outsider_admin, "realorfake leaderboard")
    ).answered()
    assert elsewhere.ephemeral and "No round" in elsewhere.text()  # servers never see each other's rounds


async def test_rounds_close_after_their_time_even_across_a_restart(discord_env, settings):
    env, server = discord_env, discord_env.server
    await train(env)
    shown = await play(env)
    message = shown.original
    await (await server.click(env.guild, env.admin, message, vote_ids(message)["Real"])).answered()
    await stop_bot(env.bot, env.task)
    env.bot, env.task = await start_bot(server, settings, env.clock)
    # The buttons of a round opened before the restart still count votes.
    after = await (
        await server.click(env.guild, env.member, message, vote_ids(message)["Generated"])
    ).answered()
    assert "counted" in after.text()
    env.clock.advance(settings.realorfake_round_seconds + 1)
    answer = await revealed(server, int(message["channel_id"]), message["id"])
    assert "Real 1 · Generated 1" in answer["embeds"][0]["fields"][1]["value"]


async def test_half_the_rounds_show_a_real_post_and_deleting_the_persona_removes_its_rounds(
    discord_env, settings
):
    env, server = discord_env, discord_env.server
    await train(env)
    games = env.bot.core.games
    games.rng = random.Random(3)
    kinds = []
    for _ in range(12):
        r = await games.start(env.guild, server.general(env.guild), "alice", env.admin)
        kinds.append(r.is_real)
        await games.close(env.guild, r.id)
        env.clock.advance(settings.realorfake_channel_gap_seconds + 1)
    assert 3 <= sum(kinds) <= 9  # 50/50 (p < 0.04 of falling outside with a fair coin)
    storage = env.bot.core.storage
    assert await storage.games.last_in_channel(server.general(env.guild)) is not None
    await env.bot.core.delete_model(env.guild, "alice")
    assert await storage.games.last_in_channel(server.general(env.guild)) is None
    await asyncio.sleep(0)
