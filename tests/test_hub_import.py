"""/models import of huggingtweets models as they are published: name, picture, data, cyborgs.

The hub is the local mirror (HF_LOCAL_MIRROR): the tiny GPT-2 stands in for the weights, and the
card is the real one (../shared/data/cards/) or one written as huggingtweets wrote them.
"""

import shutil

from tests.discord_env import start_bot, stop_bot
from tests.hub_cards import (
    AMIR,
    CYBORG_CARD,
    CYBORG_REPO,
    JS_THRILL_AVATAR,
    JS_THRILL_NAME,
    JS_THRILL_STATS,
    ZOE,
    older_layout_card,
    published_card,
)
from tests.test_service import started


def mirror_with(tmp_path, tiny_base_model, cards: dict[str, str]):
    """A local hub: each repo is the tiny model with the given README.md."""
    mirror = tmp_path / "mirror"
    for repo, card in cards.items():
        shutil.copytree(tiny_base_model, mirror / repo)
        (mirror / repo / "README.md").write_text(card, encoding="utf-8")
    return mirror


async def test_import_of_the_published_card_keeps_name_picture_data_and_prompt(
    settings, tmp_path, tiny_base_model
):
    mirror = mirror_with(tmp_path, tiny_base_model, {"huggingtweets/js_thrill": published_card()})
    core = await started(settings.replace(hf_local_mirror=str(mirror)), run_queue=False)
    try:
        await core.import_model(1, "huggingtweets/js_thrill")
        model = await core.get_model(1, "js_thrill")  # as stored, read back
        assert (model.display_name, model.avatar_url) == (JS_THRILL_NAME, JS_THRILL_AVATAR)
        assert model.stats == JS_THRILL_STATS
        assert (
            model.metrics["suggested_prompt"] == "My dream is"
            and model.metrics["source"] == "huggingtweets/js_thrill"
        )
    finally:
        await core.close()


async def test_import_of_a_cyborg_keeps_its_people(settings, tmp_path, tiny_base_model):
    mirror = mirror_with(tmp_path, tiny_base_model, {CYBORG_REPO: CYBORG_CARD})
    core = await started(settings.replace(hf_local_mirror=str(mirror)), run_queue=False)
    try:
        model = await core.import_model(1, CYBORG_REPO)
        # huggingtweets joins its people's handles with "-", as this bot names a multi-person model.
        assert model.handle == "amir_h-zoe_codes"
        assert model.display_name == "Zoë Codes ✨ & Amir H."
        assert model.avatar_url == ZOE["picture"]
        assert [p["name"] for p in model.stats["people"]] == ["Zoë Codes ✨", "Amir H."]
        assert model.stats["kept"] == ZOE["kept"] + AMIR["kept"]
        _, tweets = await core.generate(1, "amir_h-zoe_codes", "My dream is", 1)
        assert len(tweets) == 1
    finally:
        await core.close()


async def test_a_card_picture_that_is_not_a_url_is_dropped_and_the_import_succeeds(
    settings, tmp_path, tiny_base_model
):
    card = older_layout_card("Ada Lovelace 🤖 AI Bot ", picture="javascript:alert(1)")
    mirror = mirror_with(tmp_path, tiny_base_model, {"huggingtweets/ada": card, "someone/tiny-gpt2": card})
    core = await started(settings.replace(hf_local_mirror=str(mirror)), run_queue=False)
    try:
        model = await core.import_model(1, "huggingtweets/ada")
        assert (model.display_name, model.avatar_url) == ("Ada Lovelace", None)
        other = await core.import_model(1, "someone/tiny-gpt2")
        assert other.handle == "tiny_gpt2"  # outside huggingtweets "-" is part of a name
    finally:
        await core.close()


async def test_discord_import_info_impersonate_and_webhook_show_the_name_and_picture(
    discord_env, settings, tiny_base_model, tmp_path
):
    env, server = discord_env, discord_env.server
    mirror = mirror_with(
        tmp_path, tiny_base_model, {"huggingtweets/js_thrill": published_card(), CYBORG_REPO: CYBORG_CARD}
    )
    await stop_bot(env.bot, env.task)
    env.bot, env.task = await start_bot(server, settings.replace(hf_local_mirror=str(mirror)), env.clock)

    reply = await server.slash(env.guild, env.admin, "models import", repo="huggingtweets/js_thrill")
    await reply.wait(lambda i: i.original and "Imported" in (i.original.get("content") or ""))
    content = reply.original["content"]
    assert f"**{JS_THRILL_NAME}** (`@js_thrill`)" in content and "(2329 tweets)" in content
    assert "with its picture" in content and "`/impersonate js_thrill prompt:My dream is`" in content

    info = await (await server.slash(env.guild, env.member, "models info", handle="js_thrill")).answered()
    embed = info.callback["data"]["embeds"][0]
    assert info.ephemeral and embed["title"] == f"{JS_THRILL_NAME} (@js_thrill)"
    assert embed["thumbnail"]["url"] == JS_THRILL_AVATAR
    data = next(f["value"] for f in embed["fields"] if f["name"] == "Data")
    for label, figure in [
        ("Tweets downloaded", 3246),
        ("Retweets", 636),
        ("Short tweets", 281),
        ("Tweets kept", 2329),
    ]:
        assert any(line.startswith(label) and line.endswith(str(figure)) for line in data.splitlines())
    assert any(f["name"] == "Imported by" for f in embed["fields"])
    assert "huggingface.co/huggingtweets/js_thrill" in info.text()

    answer = await server.slash(env.guild, env.member, "impersonate", handle="js_thrill", count=1)
    await answer.wait(lambda i: i.original and i.original.get("embeds"))
    author = answer.original["embeds"][0]["author"]
    assert (author["name"], author["icon_url"]) == (f"{JS_THRILL_NAME} (@js_thrill)", JS_THRILL_AVATAR)

    await (await server.slash(env.guild, env.admin, "models personas", enabled=True)).answered()
    posted = await server.slash(env.guild, env.member, "impersonate", handle="js_thrill", count=1)
    await posted.wait(lambda i: any("Posted 1" in (f.get("content") or "") for f in i.followups))
    post = next(m for m in server.channel_messages(env.channel) if m.get("webhook_id"))
    assert post["author"]["username"] == f"{JS_THRILL_NAME} (bot)"
    assert post["avatar_url"] == JS_THRILL_AVATAR

    cyborg = await server.slash(env.guild, env.admin, "models import", repo=CYBORG_REPO)
    await cyborg.wait(lambda i: i.original and "Imported" in (i.original.get("content") or ""))
    assert "**Zoë Codes ✨ & Amir H.** (`@amir_h-zoe_codes`)" in cyborg.original["content"]
    assert "(3730 tweets of 2 people)" in cyborg.original["content"]
    info = await (
        await server.slash(env.guild, env.member, "models info", handle="amir_h-zoe_codes")
    ).answered()
    data = next(f["value"] for f in info.callback["data"]["embeds"][0]["fields"] if f["name"] == "Data")
    assert "Zoë Codes" in data and "Amir H." in data  # a column per person, headed by name
