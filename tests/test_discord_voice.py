"""Consent end to end: opt-in, history collection, opt-out cascade, "Who made this?", missing intent."""

import asyncio

from tests.conftest import tiny_tweets
from tests.discord_env import start_bot, stop_bot


async def restart_with_intent(env, settings):
    await stop_bot(env.bot, env.task)
    env.bot, env.task = await start_bot(env.server, settings.replace(message_content_intent=True), env.clock)


def seed_history(env, guild, user):
    """Messages over two channels (one needing several pages), a thread, an NSFW channel, noise."""
    server = env.server
    general = server.general(guild)
    other = server.add_channel(guild, "chat")
    nsfw = server.add_channel(guild, "late-night", nsfw=True)
    thread = server.add_thread(guild, general, "a thread")
    lines = tiny_tweets()
    bystander = server.add_user(f"bystander{guild % 1000}")
    for i, line in enumerate(lines[:260]):
        server.seed_message([general, other, thread][i % 3] if i >= 120 else general, user, f"{line} #{i}")
        server.seed_message(general, bystander, "someone else talking here today")
    server.seed_message(general, user, "!rank")  # a command for another bot
    server.seed_message(nsfw, user, "SECRET nsfw words that must never be collected")
    return dict(general=general, other=other, nsfw=nsfw, thread=thread)


async def test_member_history_training_with_consent_and_opt_out_cascade(discord_env, settings):
    env, server = discord_env, discord_env.server
    seed_history(env, env.guild, env.member)
    seed_history(env, env.other_guild, env.member)
    await restart_with_intent(env, settings)

    refused = await (await server.slash(env.guild, env.admin, "train member", member=env.member)).answered()
    assert refused.ephemeral and "has not opted in" in refused.text()
    assert await env.bot.core.list_jobs(env.guild) == []

    optin = await (await server.slash(env.guild, env.member, "voice optin")).answered()
    assert optin.ephemeral and "opted in" in optin.text()
    reply = await server.slash(env.guild, env.admin, "train member", member=env.member, handle="member_voice")
    await server.wait_for_message(
        env.channel, lambda m: "`member_voice` is ready" in m["content"], timeout=120
    )
    assert "Collected" in reply.original["content"]
    collected = await env.bot.core.collected_messages(env.guild, env.member)
    assert len(collected) == 260  # all pages, both channels and the thread
    assert not any("SECRET" in t or "someone else" in t or t == "!rank" for t in collected)
    history_calls = server.requests_to(f"/channels/{env.channel}/messages", "GET")
    assert len(history_calls) >= 3 and any(
        "before" in r.query for r in history_calls
    )  # paginated, newest first

    # The member can train themselves too; the other guild trains its own persona of them.
    mine = await server.slash(env.other_guild, env.member, "voice train")
    await server.wait_for_message(
        server.general(env.other_guild), lambda m: "is ready" in m["content"], timeout=120
    )
    assert mine.callback["type"] == 5
    mydata = await (await server.slash(env.guild, env.member, "voice mydata")).answered()
    assert "@member_voice" in mydata.text() and "260" in mydata.text()

    # "Who made this?" on a generated post names the persona and who asked.
    answer = await server.slash(env.guild, env.admin, "impersonate", handle="member_voice", count=1)
    await answer.wait(lambda i: i.original and i.original.get("embeds"))
    who = await (
        await server.message_command(env.guild, env.member, "Who made this?", answer.original)
    ).answered()
    assert who.ephemeral and f"<@{env.admin}>" in who.text() and "@member_voice" in who.text()
    not_ours = await (
        await server.message_command(
            env.guild, env.member, "Who made this?", server.channel_messages(env.channel)[0]
        )
    ).answered()
    assert "did not generate" in not_ours.text()

    # A schedule on the persona, then opt-out: every persona of theirs, in both guilds, goes.
    await (
        await server.slash(
            env.guild, env.admin, "autopost add", handle="member_voice", channel=env.channel, every="1h"
        )
    ).answered()
    out = await server.slash(env.guild, env.member, "voice optout")
    await out.wait(lambda i: i.followups)
    assert (
        "Deleted personas" in out.followups[0]["content"]
        and "schedules removed: 1" in out.followups[0]["content"]
    )
    assert (
        await env.bot.core.list_models(env.guild) == []
        and await env.bot.core.list_models(env.other_guild) == []
    )
    assert await env.bot.core.collected_messages(env.other_guild, env.member) == []
    assert await env.bot.core.list_schedules(env.guild) == []
    again = await (await server.slash(env.guild, env.admin, "train member", member=env.member)).answered()
    assert "has not opted in" in again.text()


async def test_voice_delete_erases_here_only(discord_env, settings):
    env, server = discord_env, discord_env.server
    core = env.bot.core
    await core.save_history_page(env.guild, env.member, 1, [(1, "kept text one")], None, True)
    await core.save_history_page(env.other_guild, env.member, 2, [(2, "kept text two")], None, True)
    reply = await server.slash(env.guild, env.member, "voice delete")
    await reply.wait(lambda i: i.followups)
    assert "collected messages deleted: 1" in reply.followups[0]["content"]
    assert await core.collected_messages(env.other_guild, env.member) == ["kept text two"]


async def test_missing_message_content_intent_is_explained(discord_env):
    env, server = discord_env, discord_env.server
    await (await server.slash(env.guild, env.member, "voice optin")).answered()
    reply = await (await server.slash(env.guild, env.admin, "train member", member=env.member)).answered()
    assert reply.ephemeral and "Message Content" in reply.text() and "developer portal" in reply.text()
    assert not (server.identifies[-1]["intents"] & (1 << 15))  # not requested unless enabled
    await asyncio.sleep(0)
