"""The bot connects to the local server, syncs its commands and answers a command."""


async def test_bot_connects_syncs_and_answers(discord_env):
    server = discord_env.server
    names = {c["name"] for c in server.commands["global"]}
    assert {"train", "impersonate", "models", "autopost", "voice", "Who made this?"} <= names
    assert server.identifies and server.identifies[0]["intents"] & 1  # guilds intent
    reply = await (await server.slash(discord_env.guild, discord_env.member, "models list")).answered()
    assert reply.ephemeral and "No personas yet" in reply.text()
    assert server.unknown_routes == []
