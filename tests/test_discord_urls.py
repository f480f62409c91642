"""/train new url: through the real discord.py client against the local Discord server, with the
archive on a local HTTP server (127.0.0.1 only; the bot runs with ALLOW_PRIVATE_URLS where it must
reach it), and the answers to uploads that cannot work."""

from __future__ import annotations

import gzip

import pytest

from tests.conftest import TINY_CORPUS
from tests.discord_env import Clock, DiscordEnv, populate, start_bot, stop_bot
from tests.discord_package import build_package, member_channels
from tests.fileserver import TWEETS, FileServer, archive_with_media, tweets_js
from tests.localdiscord import LocalDiscord


@pytest.fixture
async def file_server():
    async with FileServer() as server:
        yield server


@pytest.fixture
async def linking_env(settings):
    """The bot as a closed-network operator runs it: links may reach the test's 127.0.0.1 server."""
    async with LocalDiscord() as server:
        ids = populate(server)
        clock = Clock()
        changes = {"allow_private_urls": True, "progress_edit_seconds": 0.1}
        bot, task = await start_bot(server, settings.replace(**changes), clock)
        env = DiscordEnv(server=server, bot=bot, task=task, clock=clock, **ids)
        try:
            yield env
        finally:
            await stop_bot(env.bot, env.task)


async def test_train_from_an_archive_link_reads_only_its_tweets(linking_env, file_server):
    env, server = linking_env, linking_env.server
    file_server.files["twitter-2026.zip"], _ = archive_with_media()
    url = file_server.url("ranged/twitter-2026.zip")
    reply = await server.slash(env.guild, env.admin, "train new", handle="carol", url=url)
    await reply.answered()
    assert reply.callback["type"] == 5  # deferred at once; the download runs after
    done = await server.wait_for_message(
        server.general(env.guild),
        lambda m: "`carol` is ready" in m["content"] or "`carol` failed" in m["content"],
        timeout=120,
    )
    assert "is ready" in done["content"]
    embed = reply.original["embeds"][0]
    assert "Tweets kept" in embed["fields"][0]["value"] and str(len(TWEETS)) in embed["fields"][0]["value"]
    assert "Downloading" not in (reply.original.get("content") or "")  # replaced by the queued answer
    archive = file_server.files["twitter-2026.zip"]
    assert file_server.served.body_bytes["twitter-2026.zip"] < len(archive) / 4  # by range: no media


async def test_a_slow_download_shows_its_progress(linking_env, file_server):
    """A host without range requests sends the whole archive, slowly: the reply counts the megabytes."""
    env, server = linking_env, linking_env.server
    file_server.files["twitter.zip"], _ = archive_with_media()
    url = file_server.url("drip/twitter.zip")
    reply = await server.slash(env.guild, env.admin, "train new", handle="slow", url=url)
    await reply.wait(lambda i: bool(i.original and i.original.get("embeds")), timeout=120)
    shown = [
        r.body.get("content") or "" for r in server.requests_to("/messages/@original", "PATCH") if r.body
    ]
    assert any(f"Downloading <{url}>…" in text and "MB so far" in text for text in shown)
    assert "Queued" in reply.original["embeds"][0]["description"]
    assert file_server.served.body_bytes["twitter.zip"] == len(file_server.files["twitter.zip"])


async def test_a_link_to_tweets_js_gzipped_trains_like_an_upload(linking_env, file_server):
    env, server = linking_env, linking_env.server
    file_server.files["tweets.js.gz"] = gzip.compress(tweets_js(TWEETS))
    reply = await server.slash(
        env.guild, env.admin, "train new", handle="dave", url=file_server.url("plain/tweets.js.gz")
    )
    await reply.wait(lambda i: bool(i.original and i.original.get("embeds")))
    assert "Queued" in reply.original["embeds"][0]["description"]
    assert [job.handle for job in await env.bot.core.trainings.list(env.guild)] == ["dave"]


@pytest.mark.parametrize(
    "options,needle",
    [
        ({}, "`file:` (an upload) or `url:`"),
        ({"file": ("a.txt", TINY_CORPUS.read_bytes()), "url": "https://example.com/a.zip"}, "not both"),
        ({"url": "ftp://example.com/archive.zip"}, "https://"),
        ({"url": "https://exa mple.com/archive.zip"}, "valid host"),
    ],
)
async def test_file_or_url_exactly_one_and_well_formed(discord_env, options, needle):
    env = discord_env
    reply = await (
        await env.server.slash(env.guild, env.admin, "train new", handle="bob", **options)
    ).answered()
    assert reply.ephemeral and needle in reply.text()
    assert await env.bot.core.trainings.list(env.guild) == []


async def test_links_to_private_addresses_are_refused_by_default(discord_env, file_server):
    env = discord_env
    file_server.files["tweets.js"] = tweets_js(TWEETS)
    for url in (file_server.url("plain/tweets.js"), f"http://localhost:{file_server.port}/plain/tweets.js"):
        reply = await env.server.slash(env.guild, env.admin, "train new", handle="bob", url=url)
        await reply.wait(lambda i: "⚠️" in ((i.original or {}).get("content") or ""))
        assert "private or local address" in reply.original["content"]
    assert file_server.served.hits == []
    assert await env.bot.core.trainings.list(env.guild) == []


async def test_a_broken_link_leaves_no_trace_and_the_bot_keeps_working(linking_env, file_server):
    env, server = linking_env, linking_env.server
    whole, _ = archive_with_media()
    file_server.files["cut.zip"] = whole[: len(whole) // 2]
    for path, needle in (("plain/missing.zip", "404"), ("ranged/cut.zip", "damaged or incomplete")):
        reply = await server.slash(
            env.guild, env.admin, "train new", handle="erin", url=file_server.url(path)
        )
        await reply.wait(lambda i: "⚠️" in ((i.original or {}).get("content") or ""))
        assert needle in reply.original["content"]
    assert await env.bot.core.trainings.list(env.guild) == []
    assert await env.bot.core.list_models(env.guild) == []
    status = await (await server.slash(env.guild, env.admin, "train status")).answered()
    assert "No training jobs" in status.text()


async def test_an_unsupported_upload_says_what_to_do_with_the_users_limit(discord_env):
    env = discord_env
    rar = ("twitter-archive.rar", b"Rar!\x1a\x07\x00" + bytes(2000))
    reply = await env.server.slash(env.guild, env.admin, "train new", handle="bob", file=rar)
    await reply.wait(lambda i: "⚠️" in ((i.original or {}).get("content") or ""))
    text = reply.original["content"]
    assert "RAR archive" in text and "data/tweets.js" in text and "gzipped" in text
    assert "fits in 10 MB" in text and "`url:`" in text  # this user's attachment_size_limit


async def test_a_member_trains_on_their_package_by_link(linking_env, file_server):
    """/voice train url: the package's download link; only its message files are read by range."""
    env, server = linking_env, linking_env.server
    package = build_package(member_channels(env.guild, other_guild=99), owner_id=env.member)
    file_server.files["package.zip"] = package
    reply = await server.slash(
        env.guild, env.member, "voice train", url=file_server.url("ranged/package.zip"), handle="me_linked"
    )
    await reply.answered()
    assert reply.callback["type"] == 5
    done = await server.wait_for_message(
        server.general(env.guild), lambda m: "`me_linked` is" in m["content"], timeout=120
    )
    assert "is ready" in done["content"]
    assert "Tweets kept" in reply.original["embeds"][0]["fields"][0]["value"]
    assert server.requests_to("/messages", "GET") == []  # nothing read from Discord to train
    # Someone else's package by link is refused like an upload; a link and a file together too.
    file_server.files["theirs.zip"] = build_package(member_channels(env.guild), owner_id=env.admin)
    theirs = await server.slash(env.guild, env.member, "voice train", url=file_server.url("plain/theirs.zip"))
    await theirs.wait(lambda i: "⚠️" in ((i.original or {}).get("content") or ""))
    assert "belongs to another account" in theirs.original["content"]
    both = await server.slash(
        env.guild, env.member, "voice train", url=file_server.url("plain/theirs.zip"), file=("p.zip", package)
    )
    await both.answered()
    assert both.ephemeral and "not both" in both.text()
    assert [j.handle for j in await env.bot.core.trainings.list(env.guild)] == ["me_linked"]


async def test_voice_train_over_the_cap_says_to_give_the_link(discord_env):
    env = discord_env
    env.server.attachment_size_limit = 50 * 1024 * 1024  # a boosted server: over the bot's 25 MB
    big = ("package.zip", b"PK", 40 * 1024 * 1024)
    reply = await (await env.server.slash(env.guild, env.member, "voice train", file=big)).answered()
    assert reply.ephemeral and "Messages folder" in reply.text() and "`url:`" in reply.text()
    assert "fits in 25 MB" in reply.text()


async def test_a_download_longer_than_the_token_answers_in_the_channel(linking_env, file_server):
    """Interaction tokens work for 15 minutes; a slow download can outlast one. The queued answer
    (and the progress after it), or the error, then go to the channel, naming the requester."""
    env, server = linking_env, linking_env.server
    server.interaction_token_lifetime = 0.3  # the drip below takes over a second
    whole, _ = archive_with_media()
    file_server.files["twitter.zip"], file_server.files["cut.zip"] = whole, whole[: len(whole) // 2]
    channel = server.general(env.guild)
    await server.slash(
        env.guild, env.admin, "train new", handle="late", url=file_server.url("drip/twitter.zip")
    )
    queued = await server.wait_for_message(
        channel, lambda m: any("@late" in (e.get("title") or "") for e in m.get("embeds") or []), timeout=120
    )
    assert "Tweets kept" in queued["embeds"][0]["fields"][0]["value"]
    await server.wait_for_message(channel, lambda m: "`late` is ready" in m["content"], timeout=120)
    await server.slash(env.guild, env.admin, "train new", handle="cut", url=file_server.url("drip/cut.zip"))
    error = await server.wait_for_message(
        channel, lambda m: "damaged or incomplete" in m["content"], timeout=60
    )
    assert f"<@{env.admin}>" in error["content"] and [int(u) for u in error["allowed_mentions"]["users"]] == [
        env.admin
    ]
    assert [j.handle for j in await env.bot.core.trainings.list(env.guild)] == ["late"]
