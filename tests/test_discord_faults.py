"""The Discord connection drops and Discord rate-limits: the bot reconnects, and every reply
still arrives exactly once."""

import asyncio

from tests.test_discord_bot import CORPUS


async def wait_for(predicate, timeout=20):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_gateway_drop_during_training_then_429s(discord_env):
    env, server = discord_env, discord_env.server
    reply = await server.slash(env.guild, env.admin, "train new", handle="alice", file=CORPUS)
    await reply.answered()
    await server.drop_gateway(code=4000)  # resumable close: discord.py reconnects and RESUMEs
    await wait_for(lambda: server.resumes >= 1 or len(server.identifies) >= 2)
    await wait_for(lambda: env.bot.is_ready() and server._sockets)
    done = await server.wait_for_message(
        env.channel, lambda m: "`alice` is ready" in m["content"], timeout=120
    )
    await asyncio.sleep(0.5)
    ready = [m for m in server.channel_messages(env.channel) if "`alice` is ready" in m["content"]]
    assert ready == [done]  # the completion was delivered once across the reconnect

    # Discord answers 429 to the first two edits of the reply and to the first callback.
    server.rate_limit("/messages/@original", times=2, retry_after=0.2)
    server.rate_limit("/callback", times=1, retry_after=0.2)
    answer = await server.slash(env.guild, env.member, "impersonate", handle="alice", count=2)
    await answer.wait(lambda i: i.original and i.original.get("embeds"), timeout=30)
    assert answer.ack_latency < 3
    callbacks = [r for r in server.requests_to(f"/interactions/{answer.id}/")]
    assert len(callbacks) == 2  # one 429, one accepted
    edits = [
        r
        for r in server.requests_to(
            f"/webhooks/{server.application_id}/{answer.token}/messages/@original", "PATCH"
        )
    ]
    assert len(edits) == 3 and len(answer.original["embeds"]) == 2
    # And the bot still answers normally afterwards.
    later = await (await server.slash(env.guild, env.member, "models list")).answered()
    assert "@alice" in later.text()
