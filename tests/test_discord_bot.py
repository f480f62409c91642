"""Every command driven as a user would, through the real discord.py client and the local server."""

import asyncio

import pytest

from tests.conftest import TINY_CORPUS
from tests.discord_env import start_bot, stop_bot
from tests.discord_package import build_package, member_channels
from tests.localdiscord import UploadTooLarge

CORPUS = ("alice_tweets.txt", TINY_CORPUS.read_bytes())


async def train(env, handle="alice", user=None, guild=None, **options):
    """/train new, then wait for the completion message in the channel."""
    server = env.server
    guild = guild or env.guild
    user = user or env.admin
    channel = server.general(guild)
    reply = await server.slash(
        guild, user, "train new", handle=handle, file=options.pop("file", CORPUS), **options
    )
    await reply.answered()
    done = await server.wait_for_message(
        channel,
        lambda m: f"`{handle}` is ready" in m["content"] or f"`{handle}` failed" in m["content"],
        timeout=120,
    )
    return reply, done


async def test_train_with_progress_then_impersonate_and_model_card(discord_env):
    env, server = discord_env, discord_env.server
    reply, done = await train(env, display_name="Alice A.", avatar="https://example.com/a.png")
    assert reply.callback["type"] == 5 and reply.ack_latency < 3  # deferred at once, within Discord's 3 s
    embed = reply.original["embeds"][0]
    assert "Alice A." in embed["title"] and "Tweets kept" in embed["fields"][0]["value"]
    # One progress message, edited in place; the end is a channel message pinging only the requester.
    assert any("✅ Done" in (e.get("description") or "") for e in reply.original["embeds"])
    assert f"<@{env.admin}>" in done["content"]
    assert [int(u) for u in done["allowed_mentions"]["users"]] == [env.admin] and done["allowed_mentions"][
        "parse"
    ] == []
    assert done["attachments"][0]["filename"] == "alice-loss.png"
    assert done["attachments"][0]["data"].startswith(b"\x89PNG")

    # Autocomplete offers this guild's models; /impersonate answers with tweet-like embeds.
    choices = await server.autocomplete(env.guild, env.member, "impersonate", "handle", handle="al")
    assert [c["value"] for c in choices] == ["alice"]
    answer = await server.slash(
        env.guild, env.member, "impersonate", handle="alice", prompt="We love", count=2
    )
    await answer.wait(lambda i: i.original and i.original.get("embeds"))
    tweets = answer.original["embeds"]
    assert len(tweets) == 2
    for tweet in tweets:
        assert tweet["author"]["name"] == "Alice A. (@alice)" and tweet["description"].startswith("We love")
        assert "not a real post" in tweet["footer"]["text"]
    assert answer.original["allowed_mentions"]["parse"] == []  # nobody is pinged, whatever the text

    info = await (await server.slash(env.guild, env.member, "models info", handle="alice")).answered()
    assert info.ephemeral and "perplexity" in info.text() and "Tweets kept" in info.text()
    listing = await (await server.slash(env.guild, env.member, "models list")).answered()
    assert "@alice" in listing.text()
    status = await (await server.slash(env.guild, env.admin, "train status")).answered()
    assert "done" in status.text()


async def test_delete_with_confirmation(discord_env):
    env, server = discord_env, discord_env.server
    await train(env)
    ask = await server.slash(env.guild, env.admin, "models delete", handle="alice")
    await ask.answered()
    assert ask.ephemeral and ask.callback["data"]["components"]
    # Someone else cannot press the button; the asker can.
    other = await (await server.click(env.guild, env.member, ask.original, "confirm")).answered()
    assert other.ephemeral and "Only the person who asked" in other.text()
    await (await server.click(env.guild, env.admin, ask.original, "confirm")).answered()
    await ask.wait(lambda i: "Deleted" in (i.original or {}).get("content", ""))
    gone = await (await server.slash(env.guild, env.member, "impersonate", handle="alice")).answered()
    assert gone.ephemeral and "no model called `alice`" in gone.text()


@pytest.mark.parametrize(
    "command,options",
    [
        ("train new", {"handle": "bob", "file": CORPUS}),
        ("models delete", {"handle": "bob"}),
        ("models import", {"repo": "huggingtweets/js_thrill"}),
        ("train cancel", {"job": 1}),
    ],
)
async def test_members_without_manage_server_are_refused(discord_env, command, options):
    env = discord_env
    reply = await (await env.server.slash(env.guild, env.member, command, **options)).answered()
    assert reply.ephemeral and "Manage Server" in reply.text()
    assert await env.bot.core.trainings.list(env.guild) == []
    train_command = next(c for c in env.server.commands["global"] if c["name"] == "train")
    assert str(train_command["default_member_permissions"]) == str(1 << 5)  # hidden from members by default


@pytest.mark.parametrize(
    "file,needle",
    [
        (("photo.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100), "PNG"),
        (("empty.txt", b""), "empty"),
        (("few.txt", b"one tweet here\nanother tweet here\n"), "6,000"),
        (("rt.csv", b"text\n" + b"RT @x: something long enough to count\n" * 300), "retweets"),
        (("cols.csv", b"id,date\n1,2\n"), "No text column"),
    ],
)
async def test_bad_files_get_a_specific_error_and_leave_no_trace(discord_env, file, needle):
    env = discord_env
    reply = await env.server.slash(env.guild, env.admin, "train new", handle="bob", file=file)
    await reply.wait(lambda i: i.original and "⚠️" in (i.original.get("content") or ""))
    assert needle in reply.original["content"]
    assert await env.bot.core.trainings.list(env.guild) == []
    assert await env.bot.core.list_models(env.guild) == []


async def test_a_members_data_package_is_theirs_alone(discord_env):
    """A moderator cannot train a persona of a member from the member's Discord data package."""
    env = discord_env
    package = ("package.zip", build_package(member_channels(env.guild), owner_id=env.member))
    reply = await env.server.slash(env.guild, env.admin, "train new", handle="member", file=package)
    await reply.wait(lambda i: i.original and "⚠️" in (i.original.get("content") or ""))
    assert "only the member it belongs to" in reply.original["content"]
    assert await env.bot.core.trainings.list(env.guild) == []


async def test_oversized_attachment_refused_before_download(discord_env):
    env = discord_env
    huge = ("archive.zip", b"PK", 200 * 1024 * 1024)  # claims 200 MB; never downloaded
    with pytest.raises(UploadTooLarge):  # over the user's attachment_size_limit: Discord refuses it
        await env.server.slash(env.guild, env.admin, "train new", handle="bob", file=huge)
    env.server.attachment_size_limit = 500 * 1024 * 1024  # Nitro: the bot sees it, over its own cap
    reply = await (
        await env.server.slash(env.guild, env.admin, "train new", handle="bob", file=huge)
    ).answered()
    assert reply.ephemeral and "I read uploads up to 25 MB" in reply.text()
    assert "data/tweets.js" in reply.text() and "gzipped" in reply.text() and "`url:`" in reply.text()
    assert env.server.requests_to("/cdn/") == []


@pytest.mark.parametrize(
    "handle,needle",
    [
        ("has space", "letters, digits"),
        ("../etc", "letters, digits"),
        ("a" * 200, "too long"),
        ("@everyone", "reserved"),
        ("x'; DROP TABLE models;--", "letters, digits"),
        ("😀", "letters, digits"),
    ],
)
async def test_bad_handles(discord_env, handle, needle):
    env = discord_env
    reply = await (
        await env.server.slash(env.guild, env.admin, "train new", handle=handle, file=CORPUS)
    ).answered()
    assert reply.ephemeral and needle in reply.text()


async def test_unknown_handle_cooldown_and_other_guild_isolation(discord_env):
    env, server = discord_env, discord_env.server
    await train(env)
    unknown = await (await server.slash(env.guild, env.member, "impersonate", handle="nobody")).answered()
    assert unknown.ephemeral and "no model called `nobody`" in unknown.text()
    # The other guild sees nothing of the first one's models.
    assert (
        await server.autocomplete(env.other_guild, env.outsider_admin, "impersonate", "handle", handle="")
        == []
    )
    other = await (
        await server.slash(env.other_guild, env.outsider_admin, "impersonate", handle="alice")
    ).answered()
    assert other.ephemeral and "no model called `alice`" in other.text()
    listing = await (await server.slash(env.other_guild, env.outsider_admin, "models list")).answered()
    assert "No personas yet" in listing.text()
    delete = await (
        await server.slash(env.other_guild, env.outsider_admin, "models delete", handle="alice")
    ).answered()
    assert "no model called" in delete.text()
    assert await env.bot.core.find_model(env.guild, "alice") is not None


async def test_impersonate_cooldown(discord_env, settings):
    env, server = discord_env, discord_env.server
    await train(env)
    await stop_bot(env.bot, env.task)
    env.bot, env.task = await start_bot(server, settings.replace(impersonate_cooldown_seconds=60), env.clock)
    first = await server.slash(env.guild, env.member, "impersonate", handle="alice", count=1)
    await first.wait(lambda i: i.original and i.original.get("embeds"))
    second = await (
        await server.slash(env.guild, env.member, "impersonate", handle="alice", count=1)
    ).answered()
    assert second.ephemeral and "Slow down" in second.text()
    # Another member is not affected by the first one's cooldown.
    third = await server.slash(env.guild, env.admin, "impersonate", handle="alice", count=1)
    await third.wait(lambda i: i.original and i.original.get("embeds"))


async def test_event_loop_stays_responsive_while_training(discord_env, settings):
    """Heartbeats keep their rhythm and a command is answered at once during a long training."""
    env, server = discord_env, discord_env.server
    await stop_bot(env.bot, env.task)
    slow = settings.replace(train_max_steps=3000, train_epochs=20, train_batch_size=1, train_block_size=16)
    env.bot, env.task = await start_bot(server, slow, env.clock)
    reply = await server.slash(env.guild, env.admin, "train new", handle="slow", file=CORPUS)
    await reply.answered()
    while env.bot.core.trainings.progress(1) is None or env.bot.core.trainings.progress(1).step < 5:
        await asyncio.sleep(0.05)
    start = len(server.heartbeats)
    quick = await (await server.slash(env.guild, env.member, "models list")).answered(timeout=3)
    assert quick.ack_latency < 1.0
    await asyncio.sleep(3.5)
    assert env.bot.core.trainings.progress(1) is not None, "training should still be running"
    beats = server.heartbeats[start - 1 :]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert len(beats) >= 3 and max(gaps) < 1.0 + 0.5  # interval is 1 s
    assert await env.bot.core.trainings.cancel(env.guild, 1) == "cancelling"


async def test_every_interaction_is_answered(discord_env):
    env, server = discord_env, discord_env.server
    await server.slash(env.guild, env.member, "impersonate", handle="x y")
    await server.slash(env.guild, env.member, "train status")
    await server.slash(env.guild, env.member, "models info", handle="nobody")
    await asyncio.sleep(1.0)
    for interaction in server.interactions.values():
        await interaction.answered(timeout=5)
    assert server.unknown_routes == []


async def test_restart_mid_training_resumes_and_tells_the_requester(discord_env, settings):
    env, server = discord_env, discord_env.server
    await stop_bot(env.bot, env.task)
    resumable = settings.replace(
        train_max_steps=40, train_epochs=20, train_batch_size=2, train_checkpoint_seconds=1e-6
    )
    env.bot, env.task = await start_bot(server, resumable, env.clock)
    reply = await server.slash(env.guild, env.admin, "train new", handle="alice", file=CORPUS)
    await reply.answered()
    while env.bot.core.trainings.progress(1) is None or env.bot.core.trainings.progress(1).step < 5:
        await asyncio.sleep(0.05)
    await stop_bot(env.bot, env.task)  # a restart in the middle of the training

    env.bot, env.task = await start_bot(server, resumable, env.clock)
    told = await server.wait_for_message(
        env.channel, lambda m: "interrupted by a restart" in m["content"], timeout=30
    )
    assert f"<@{env.admin}>" in told["content"] and "resumes from its checkpoint at step" in told["content"]
    done = await server.wait_for_message(
        env.channel, lambda m: "`alice` is ready" in m["content"], timeout=120
    )
    assert f"<@{env.admin}>" in done["content"]
    model = await env.bot.core.find_model(env.guild, "alice")
    assert model.metrics["resumed_from_step"] >= 5 and model.metrics["steps"] == 40
