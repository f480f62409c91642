"""Auto-posting, persona webhooks, multi-person models, hub import and export, end to end."""

import asyncio
import io
import shutil
import zipfile

from tests.discord_env import start_bot, stop_bot
from tests.localdiscord import ALL_PERMISSIONS, MANAGE_WEBHOOKS
from tests.test_discord_bot import CORPUS, train
from tests.test_service import HUGGINGTWEETS_CARD


def posts_in(server, channel_id):
    return [
        m
        for m in server.channel_messages(channel_id)
        if m["author"]["bot"]
        and (
            m.get("webhook_id")
            or (m.get("embeds") and "not a real post" in m["embeds"][0].get("footer", {}).get("text", ""))
        )
    ]


async def wait_until(predicate, timeout=20):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def trained_with_hourly_posts(env) -> None:
    """The persona @alice, trained, and an hourly autopost of it in the general channel."""
    await train(env)
    await (
        await env.server.slash(
            env.guild, env.admin, "autopost add", handle="alice", channel=env.channel, every="1h"
        )
    ).answered()


async def test_schedule_fires_once_per_window_and_once_after_downtime(discord_env):
    env, server = discord_env, discord_env.server
    await train(env, display_name="Alice")
    added = await (
        await server.slash(
            env.guild,
            env.admin,
            "autopost add",
            handle="alice",
            channel=env.channel,
            every="30m",
            prompt="We",
        )
    ).answered()
    assert added.ephemeral and "Schedule #1" in added.text() and "every 30m" in added.text()
    await asyncio.sleep(1)
    assert posts_in(server, env.channel) == []  # not due yet
    env.clock.advance(31 * 60)
    await wait_until(lambda: len(posts_in(server, env.channel)) == 1)
    post = posts_in(server, env.channel)[0]
    assert post["embeds"][0]["description"].startswith("We") and post["nonce"]
    assert post["allowed_mentions"]["parse"] == []
    await asyncio.sleep(1)
    assert len(posts_in(server, env.channel)) == 1  # the next window is 30 minutes away
    env.clock.advance(10 * 24 * 3600)  # ten days down: 480 missed windows
    await wait_until(lambda: len(posts_in(server, env.channel)) == 2)
    await asyncio.sleep(1.5)
    assert len(posts_in(server, env.channel)) == 2  # a missed window posts once, not 480 times
    listing = await (await server.slash(env.guild, env.admin, "autopost list")).answered()
    assert "#1" in listing.text() and "@alice" in listing.text()


async def test_restart_mid_post_does_not_double_post(discord_env, settings):
    env, server = discord_env, discord_env.server
    await trained_with_hourly_posts(env)
    env.clock.advance(3601)
    await wait_until(lambda: len(posts_in(server, env.channel)) == 1)
    sent = posts_in(server, env.channel)[0]
    await stop_bot(env.bot, env.task)
    # As if the process died after Discord took the post but before the schedule moved on.
    import sqlite3

    with sqlite3.connect(settings.database_path) as db:
        db.execute(
            "UPDATE schedules SET pending_nonce = ?, pending_since = 0, next_run_at = 0", (sent["nonce"],)
        )
    env.bot, env.task = await start_bot(server, settings.replace(schedule_tick_seconds=0.2), env.clock)
    await wait_until(lambda: len(server.requests_to(f"/channels/{env.channel}/messages", "POST")) >= 3)
    await asyncio.sleep(1)
    assert len(posts_in(server, env.channel)) == 1  # the retry reused the nonce: Discord kept one message
    schedule = (await env.bot.core.schedules.list(env.guild))[0]
    assert schedule.pending_nonce is None and schedule.next_run_at > env.clock()


async def test_stopping_mid_post_finishes_the_post_first(discord_env, settings):
    """The bot is stopped while a scheduled post waits for Discord's answer: the post completes and
    the schedule moves on (a tick cancelled mid-way left the post pending, and could leave a query
    half-closed so the process never left its event loop)."""
    env, server = discord_env, discord_env.server
    await trained_with_hourly_posts(env)
    server.stall(f"/channels/{env.channel}/messages")  # the post is made, its answer held
    env.clock.advance(3601)
    await wait_until(lambda: len(posts_in(server, env.channel)) == 1)
    stopping = asyncio.create_task(stop_bot(env.bot, env.task))
    await asyncio.sleep(0.5)
    assert not stopping.done()  # the tick at work holds the shutdown
    server.unstall()
    await stopping
    assert env.bot.is_closed() and len(posts_in(server, env.channel)) == 1
    import sqlite3

    with sqlite3.connect(settings.database_path) as db:
        pending, next_run = db.execute("SELECT pending_nonce, next_run_at FROM schedules").fetchone()
    assert pending is None and next_run > env.clock()


async def test_deleted_channel_or_model_pauses_and_tells_once(discord_env):
    env, server = discord_env, discord_env.server
    await train(env)
    news = server.add_channel(env.guild, "news")
    server._dispatch("CHANNEL_CREATE", server.guilds[env.guild]["channels"][news])
    await asyncio.sleep(0.3)
    await (
        await server.slash(env.guild, env.admin, "autopost add", handle="alice", channel=news, every="5m")
    ).answered()
    await (
        await server.slash(
            env.guild, env.admin, "autopost add", handle="alice", channel=env.channel, every="5m"
        )
    ).answered()
    server.delete_channel(env.guild, news)
    env.clock.advance(600)

    def notices():
        return [m["content"] for m in server.channel_messages(env.channel) if "is paused" in m["content"]]

    await wait_until(lambda: len(notices()) == 1)
    assert "channel was deleted" in notices()[0]
    await wait_until(lambda: len(posts_in(server, env.channel)) == 1)  # the other schedule still posts
    await (await server.slash(env.guild, env.admin, "models delete", handle="alice")).answered()
    ask = next(
        i for i in reversed(list(server.interactions.values())) if i.original and i.original.get("components")
    )
    await (await server.click(env.guild, env.admin, ask.original, "confirm")).answered()
    await ask.wait(lambda i: "Deleted" in (i.original or {}).get("content", ""))
    for _ in range(3):
        env.clock.advance(600)
        await asyncio.sleep(0.6)
    assert len(notices()) == 2 and "no longer exists" in notices()[1]  # each told once, not every tick
    schedules = await env.bot.core.schedules.list(env.guild)
    assert all(s.paused for s in schedules)
    resumed = await (
        await server.slash(env.guild, env.admin, "autopost resume", id=schedules[0].id)
    ).answered()
    assert "resumed" in resumed.text()
    removed = await (
        await server.slash(env.guild, env.admin, "autopost remove", id=schedules[1].id)
    ).answered()
    assert "removed" in removed.text()


async def test_autopost_validation_and_permissions(discord_env):
    env, server = discord_env, discord_env.server
    await train(env)
    for every, needle in [("0s", "between 5 minutes"), ("-5m", "negative"), ("999999d", "between 5 minutes")]:
        reply = await (
            await server.slash(
                env.guild, env.admin, "autopost add", handle="alice", channel=env.channel, every=every
            )
        ).answered()
        assert reply.ephemeral and needle in reply.text()
    member = await (
        await server.slash(
            env.guild, env.member, "autopost add", handle="alice", channel=env.channel, every="1h"
        )
    ).answered()
    assert "Manage Server" in member.text()
    other = await (
        await server.slash(
            env.other_guild,
            env.outsider_admin,
            "autopost add",
            handle="alice",
            channel=server.general(env.other_guild),
            every="1h",
        )
    ).answered()
    assert "no model called" in other.text()
    assert await env.bot.core.schedules.list(env.guild) == []


async def test_persona_webhook_created_once_reused_and_labelled(discord_env):
    env, server = discord_env, discord_env.server
    await train(env, display_name="Alice Discord", avatar="https://example.com/a.png")
    on = await (await server.slash(env.guild, env.admin, "models personas", enabled=True)).answered()
    assert "on" in on.text()
    for _ in range(2):
        reply = await server.slash(env.guild, env.member, "impersonate", handle="alice", count=2)
        await reply.wait(lambda i: any("Posted 2" in (f.get("content") or "") for f in i.followups))
        assert reply.ephemeral
    posts = [m for m in server.channel_messages(env.channel) if m.get("webhook_id")]
    assert len(posts) == 4
    assert all(p["author"]["username"].endswith(" (bot)") for p in posts)
    assert "discord" not in posts[0]["author"]["username"].lower()  # Discord refuses such names
    assert posts[0]["avatar_url"] == "https://example.com/a.png"
    assert all(p["allowed_mentions"]["parse"] == [] for p in posts)
    assert len(server.requests_to(f"/channels/{env.channel}/webhooks", "POST")) == 1  # reused, not re-created
    # "Who made this?" knows who asked for a persona post.
    who = await (await server.message_command(env.guild, env.admin, "Who made this?", posts[0])).answered()
    assert who.ephemeral and f"<@{env.member}>" in who.text() and "@alice" in who.text()


async def test_persona_falls_back_to_embeds_without_webhook_permission_or_slot(discord_env):
    env, server = discord_env, discord_env.server
    await train(env)
    await (await server.slash(env.guild, env.admin, "models personas", enabled=True)).answered()
    server.set_bot_permissions(env.guild, ALL_PERMISSIONS & ~MANAGE_WEBHOOKS & ~(1 << 3))
    await asyncio.sleep(0.3)
    reply = await server.slash(env.guild, env.member, "impersonate", handle="alice", count=1)
    await reply.wait(lambda i: any("Posted 1" in (f.get("content") or "") for f in i.followups))
    fallback = [
        m
        for m in server.channel_messages(env.channel)
        if m["embeds"] and "not a real post" in m["embeds"][0]["footer"]["text"]
    ]
    assert len(fallback) == 1 and server.webhooks == {}
    # With the permission back but 10 other webhooks in the channel, it still falls back.
    server.set_bot_permissions(env.guild, ALL_PERMISSIONS & ~(1 << 3))
    for i in range(10):
        server.add_webhook(env.guild, env.channel, f"other-{i}")
    await asyncio.sleep(0.3)
    reply = await server.slash(env.guild, env.member, "impersonate", handle="alice", count=1)
    await reply.wait(lambda i: any("Posted 1" in (f.get("content") or "") for f in i.followups))
    assert len(server.webhooks) == 10


async def test_multi_person_model(discord_env):
    env, server = discord_env, discord_env.server
    lines = TINY_LINES = CORPUS[1].decode().splitlines()
    bob = ("bob.txt", "\n".join(reversed(lines[:250])).encode())
    reply = await server.slash(
        env.guild, env.admin, "train new", handle="alice", file=CORPUS, handle2="bob", file2=bob
    )
    await server.wait_for_message(env.channel, lambda m: "`alice-bob` is ready" in m["content"], timeout=120)
    model = await env.bot.core.find_model(env.guild, "alice-bob")
    assert model.display_name == "alice & bob"
    assert [p["handle"] for p in model.stats["people"]] == ["alice", "bob"]
    card = (env.bot.core.store.resolve(model.path) / "README.md").read_text()
    assert "| Data | alice | bob |" in card
    assert "@alice" in reply.original["embeds"][0]["fields"][0]["value"]  # a column per person
    bad = await (
        await server.slash(env.guild, env.admin, "train new", handle="carol", file=CORPUS, handle2="dave")
    ).answered()
    assert bad.ephemeral and "both a handle and a file" in bad.text()
    assert len(TINY_LINES) > 250


async def test_hub_import_from_local_folder_export_and_card(discord_env, settings, tiny_base_model, tmp_path):
    env, server = discord_env, discord_env.server
    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_base_model, mirror / "huggingtweets" / "js_thrill")
    (mirror / "huggingtweets" / "js_thrill" / "README.md").write_text(HUGGINGTWEETS_CARD)
    await stop_bot(env.bot, env.task)
    env.bot, env.task = await start_bot(server, settings.replace(hf_local_mirror=str(mirror)), env.clock)
    reply = await server.slash(env.guild, env.admin, "models import", repo="huggingtweets/js_thrill")
    await reply.wait(lambda i: i.original and "Imported" in (i.original.get("content") or ""))
    assert "JS Thrill" in reply.original["content"] and "2761 tweets" in reply.original["content"]
    answer = await server.slash(env.guild, env.member, "impersonate", handle="js_thrill", count=1)
    await answer.wait(lambda i: i.original and i.original.get("embeds"))
    assert answer.original["embeds"][0]["author"]["name"] == "JS Thrill (@js_thrill)"

    await train(env)
    export = await server.slash(env.guild, env.admin, "models export", handle="alice")
    await export.wait(lambda i: i.followups)
    files = {f["filename"]: f for f in export.followups[0]["attachments"]}
    assert set(files) == {"README.md", "alice.zip"}
    names = zipfile.ZipFile(io.BytesIO(files["alice.zip"]["data"])).namelist()
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "README.md",
        "loss_curve.png",
    } <= set(names)
    card = files["README.md"]["data"].decode()
    assert "tags:\n- huggingtweets" in card and "widget:" in card and "pipeline('text-generation'" in card
    bad = await (
        await server.slash(env.guild, env.admin, "models import", repo="../../etc/passwd")
    ).answered()
    assert "Hugging Face model id" in bad.text()
