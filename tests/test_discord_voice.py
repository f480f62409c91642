"""/voice end to end through the real discord.py client: a member trains a persona of themselves on
their own Discord data package (an attachment), only they can, the bot reads no message to train,
"Who made this?", and erasure (here, everywhere)."""

import asyncio

from tests.discord_package import build_package, member_channels

MESSAGE_CONTENT = 1 << 15


def package_of(env, guild: int, **kw) -> tuple[str, bytes]:
    return ("package.zip", build_package(member_channels(guild, other_guild=99), owner_id=env.member, **kw))


async def voice_train(env, guild: int, user: int, file, **options):
    reply = await env.server.slash(guild, user, "voice train", file=file, **options)
    await reply.answered()
    return reply


async def test_a_member_trains_on_their_package_then_opts_out_everywhere(discord_env):
    env, server, core = discord_env, discord_env.server, discord_env.bot.core
    reply = await voice_train(env, env.guild, env.member, package_of(env, env.guild), handle="member_voice")
    done = await server.wait_for_message(
        env.channel, lambda m: "`member_voice` is ready" in m["content"], timeout=120
    )
    assert reply.callback["type"] == 5 and f"<@{env.member}>" in done["content"]
    table = reply.original["embeds"][0]["fields"][0]["value"]  # the data table, as /train new shows it
    assert "Bot commands" in table and "Link shares" in table and "Tweets kept" in table
    assert "2 DM and group DM conversations were skipped unread" in reply.original["content"]
    # The bot read no message to train: no history request, no Message Content intent asked for.
    assert server.requests_to("/messages", "GET") == []
    assert not server.identifies[-1]["intents"] & MESSAGE_CONTENT

    # In the other server, only that server's channels.
    here_only = await voice_train(
        env, env.other_guild, env.member, package_of(env, env.other_guild), this_server_only=True
    )
    await server.wait_for_message(
        server.general(env.other_guild), lambda m: "is ready" in m["content"], timeout=120
    )
    assert "channels of other servers were left out" in here_only.original["content"]
    [(_, other_handle)] = await core.voices.personas_using(env.member, env.other_guild)
    assert other_handle == "member"  # their user name by default

    mydata = await (await server.slash(env.guild, env.member, "voice mydata")).answered()
    assert (
        mydata.ephemeral
        and "`@member_voice`" in mydata.text()
        and "never read your messages" in mydata.text()
    )

    # "Who made this?" on a generated post names the persona and who asked.
    answer = await server.slash(env.guild, env.admin, "impersonate", handle="member_voice", count=1)
    await answer.wait(lambda i: i.original and i.original.get("embeds"))
    while await core.posts.post(env.guild, int(answer.original["id"])) is None:  # logged after it is sent
        await asyncio.sleep(0.05)
    who = await (
        await server.message_command(env.guild, env.member, "Who made this?", answer.original)
    ).answered()
    assert who.ephemeral and f"<@{env.admin}>" in who.text() and "@member_voice" in who.text()

    # A schedule on the persona, then opt-out: every persona of theirs, in both servers, goes.
    await (
        await server.slash(
            env.guild, env.admin, "autopost add", handle="member_voice", channel=env.channel, every="1h"
        )
    ).answered()
    out = await server.slash(env.guild, env.member, "voice optout")
    await out.wait(lambda i: i.followups)
    assert (
        "`@member_voice`" in out.followups[0]["content"]
        and "schedules removed: 1" in out.followups[0]["content"]
    )
    assert await core.list_models(env.guild) == [] and await core.list_models(env.other_guild) == []
    assert await core.schedules.list(env.guild) == []


async def test_only_the_owner_trains_on_a_package(discord_env):
    env, server, core = discord_env, discord_env.server, discord_env.bot.core
    huge = ("package.zip", b"PK", 200 * 1024 * 1024)  # claims 200 MB; never downloaded
    server.attachment_size_limit = 500 * 1024 * 1024  # Nitro: Discord lets it through, over the bot's cap
    refused = await (await server.slash(env.guild, env.member, "voice train", file=huge)).answered()
    assert refused.ephemeral and "Messages folder" in refused.text()
    assert server.requests_to("/cdn/") == []
    outsider = server.add_user("outsider2")
    server.add_member(env.guild, outsider)
    for user, file, options, needle in [
        (outsider, package_of(env, env.guild), {}, "belongs to another account"),
        (env.member, ("tweets.txt", b"just some text\n" * 500), {}, "not a Discord data package"),
        (env.member, package_of(env, 5), {"this_server_only": True}, "None of this package's messages"),
    ]:
        reply = await server.slash(env.guild, user, "voice train", file=file, **options)
        await reply.wait(lambda i: i.original and "⚠️" in (i.original.get("content") or ""))
        assert needle in reply.original["content"]
    assert await core.trainings.list(env.guild) == []
    # Moderators have no command that trains a member: the history commands are gone.
    names = {o["name"] for scope in server.commands.values() for c in scope for o in c.get("options", [])}
    assert not {"member", "exclude", "optin"} & names


async def test_voice_delete_erases_here_only(discord_env):
    env, server, core = discord_env, discord_env.server, discord_env.bot.core
    for guild in (env.guild, env.other_guild):
        await voice_train(env, guild, env.member, package_of(env, guild), handle="mine")
        await server.wait_for_message(
            server.general(guild), lambda m: "`mine` is ready" in m["content"], timeout=120
        )
    reply = await server.slash(env.guild, env.member, "voice delete")
    await reply.wait(lambda i: i.followups)
    assert "Deleted personas: `@mine`" in reply.followups[0]["content"]
    assert await core.list_models(env.guild) == []
    assert [m.handle for m in await core.list_models(env.other_guild)] == ["mine"]
