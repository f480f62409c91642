"""/train update and /models rollback through the real discord.py client and the local server."""

from tests.conftest import tiny_tweets
from tests.test_discord_bot import train

POSTS = tiny_tweets()
FIRST = ("first.txt", "\n".join(POSTS[:200]).encode())
LATER = ("later.txt", "\n".join(POSTS[150:]).encode())


async def update(env, file=LATER, handle="alice", user=None):
    reply = await env.server.slash(env.guild, user or env.admin, "train update", handle=handle, file=file)
    return await reply.answered()


async def test_train_update_then_models_info_and_rollback(discord_env):
    env, server = discord_env, discord_env.server
    await train(env, file=FIRST)
    unknown = await update(env, handle="nobody")
    assert unknown.ephemeral and "no model called `nobody`" in unknown.text()
    member = await update(env, user=env.member)
    assert member.ephemeral and "Manage Server" in member.text()

    reply = await update(env)
    await reply.wait(
        lambda i: "Continues from v1 with 200 new posts" in ((i.original or {}).get("content") or "")
    )
    assert "(50 it had seen already): trains on 180 of them" in reply.original["content"]
    done = await server.wait_for_message(
        env.channel, lambda m: "`alice` is ready (v2, continued from v1" in m["content"], timeout=120
    )
    assert f"<@{env.admin}>" in done["content"]
    same = await update(env)  # read after the public defer: the placeholder becomes the answer
    await same.wait(lambda i: "None of the 250 posts in that file is new to `alice`" in i.text())
    assert await env.bot.core.trainings.list(env.guild, active_only=True) == []

    info = await (await server.slash(env.guild, env.member, "models info", handle="alice")).answered()
    version = next(f for f in info.original["embeds"][0]["fields"] if f["name"] == "Version")
    assert "v2, continued from v1 with 200 new posts" in version["value"] and "v1" in version["value"]
    decoding = next(f for f in info.original["embeds"][0]["fields"] if f["name"] == "Decoding")
    expected = "int8 engine" if env.bot.core.generator.int8 else "generic path"  # a GPT-2 LoRA persona
    assert expected in decoding["value"]

    ask = await (await server.slash(env.guild, env.admin, "models rollback", handle="alice")).answered()
    assert ask.ephemeral and "Go back from v2 of `@alice` to v1?" in ask.text()
    await (await server.click(env.guild, env.admin, ask.original, "confirm")).answered()
    await ask.wait(lambda i: "is back to v1; v2 was deleted" in (i.original or {}).get("content", ""))
    again = await (await server.slash(env.guild, env.admin, "models rollback", handle="alice")).answered()
    assert again.ephemeral and "`alice` has no earlier version to go back to" in again.text()
    answer = await server.slash(env.guild, env.member, "impersonate", handle="alice", count=1)
    await answer.wait(lambda i: i.original and i.original.get("embeds"))
