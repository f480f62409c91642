"""Discord's limits without the bot: the local server refuses like Discord, the formatting code
never builds a payload over a limit (property test), URLs are checked at input, and generation
stays within the model's positions."""

import aiohttp
import pytest
import torch
from discord import app_commands
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import SettingsError, load_settings
from bot.core.errors import UserError
from bot.core.generation.generator import Generator, Sampling
from bot.core.generation.nucleus import fit_to_positions
from bot.core.handles import HANDLE_RE, clean_display_name
from bot.core.storage import ModelRecord
from bot.core.urls import normalize_http_url
from bot.discord.discord_limits import (
    embed_messages,
    fit_choices,
    fit_content,
    fit_embed,
    split_content,
    webhook_username,
)
from bot.discord.posting import persona_name
from bot.discord.ui import tweet_embed
from tests.localdiscord import (
    LocalDiscord,
    choices_errors,
    message_errors,
    webhook_name_errors,
    well_formed_url,
)
from tests.tiny_model import build_tiny_gpt2

# -- the local server refuses what Discord refuses ----------------------------------------------------


async def _interaction(server: LocalDiscord):
    guild = server.add_guild("g")
    return server._base_interaction(2, guild, server.guilds[guild]["owner_id"], None, {"name": "x"})


async def _post(session, server, path, body, method="POST"):
    async with session.request(method, f"{server.api_base}{path}", json=body) as response:
        return response.status, await response.json() if response.status != 204 else None


async def test_server_refuses_payloads_over_limits_with_discords_error_body():
    async with LocalDiscord() as server, aiohttp.ClientSession() as session:
        interaction = await _interaction(server)
        base = f"/interactions/{interaction.id}/{interaction.token}/callback"
        embed = {
            "description": "x" * 4097,
            "author": {"name": "a", "icon_url": "https://example.com/my avatar.png"},
        }
        status, error = await _post(session, server, base, {"type": 4, "data": {"embeds": [embed]}})
        assert status == 400 and error["code"] == 50035 and error["message"] == "Invalid Form Body"
        assert (
            error["errors"]["data"]["embeds"]["0"]["description"]["_errors"][0]["code"]
            == "BASE_TYPE_MAX_LENGTH"
        )
        assert (
            error["errors"]["data"]["embeds"]["0"]["author"]["icon_url"]["_errors"][0]["message"]
            == "Not a well formed URL."
        )
        many = [{"description": "y" * 1000} for _ in range(7)]  # each fine, 7,000 together
        status, error = await _post(session, server, base, {"type": 4, "data": {"embeds": many}})
        assert (
            status == 400
            and error["errors"]["data"]["embeds"]["_errors"][0]["code"] == "MAX_EMBED_SIZE_EXCEEDED"
        )
        status, error = await _post(session, server, base, {"type": 4, "data": {"content": "z" * 2001}})
        assert status == 400 and "content" in error["errors"]["data"]
        assert interaction.callback is None and len(interaction.refused) == 3

        status, _ = await _post(session, server, base, {"type": 4, "data": {"content": "ok"}})
        assert status == 200
        status, error = await _post(session, server, base, {"type": 4, "data": {"content": "again"}})
        assert (status, error["code"]) == (400, 40060)  # Interaction has already been acknowledged


async def test_server_refuses_followups_before_the_callback_and_callbacks_after_3_seconds():
    async with LocalDiscord() as server, aiohttp.ClientSession() as session:
        interaction = await _interaction(server)
        hook = f"/webhooks/{server.application_id}/{interaction.token}"
        status, error = await _post(session, server, hook, {"content": "too early"})
        assert (status, error["code"]) == (404, 10015)  # Unknown Webhook
        status, error = await _post(session, server, f"{hook}/messages/@original", {"content": "x"}, "PATCH")
        assert (status, error["code"]) == (404, 10015)

        late = await _interaction(server)
        late.sent_at -= 3.5
        status, error = await _post(
            session, server, f"/interactions/{late.id}/{late.token}/callback", {"type": 5}
        )
        assert (status, error["code"]) == (404, 10062)  # Unknown interaction: the token died after 3 s

        choices = [{"name": "n" * 101, "value": "v"}] + [{"name": "ok", "value": str(i)} for i in range(25)]
        auto = await _interaction(server)
        status, error = await _post(
            session,
            server,
            f"/interactions/{auto.id}/{auto.token}/callback",
            {"type": 8, "data": {"choices": choices}},
        )
        assert (
            status == 400
            and error["errors"]["data"]["choices"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        )
        status, error = await _post(
            session,
            server,
            f"/interactions/{auto.id}/{auto.token}/callback",
            {"type": 8, "data": {"choices": choices[:25]}},
        )
        assert status == 400 and "name" in error["errors"]["data"]["choices"]["0"]


async def test_server_refuses_webhook_names_discord_refuses():
    async with LocalDiscord() as server, aiohttp.ClientSession() as session:
        guild = server.add_guild("g")
        webhook = server.add_webhook(guild, server.general(guild), "hook")
        path = f"/webhooks/{webhook['id']}/{webhook['token']}"
        for name in ("Dis\u200bcord fan", "CLYDE", "", "x" * 81):
            status, error = await _post(session, server, path, {"content": "hi", "username": name})
            assert status == 400 and "username" in error["errors"], name
        status, error = await _post(
            session, server, path, {"content": "hi", "avatar_url": "https://a b/c.png"}
        )
        assert status == 400 and "avatar_url" in error["errors"]
        status, _ = await _post(
            session, server, path, {"content": "hi", "username": persona_name("Discord fan")}
        )
        assert status == 200


def test_webhook_names_use_look_alikes_not_zero_width_spaces():
    for name in (
        "Discord",
        "discord",
        "Clyde bot",
        "my CLYDE and DISCORD",
        "dis\u200bcord",
        "clydediscordclyde",
    ):
        assert not webhook_name_errors({}, ["username"], persona_name(name)), persona_name(name)
    assert persona_name("Discord Clyde") == "Disc0rd CIyde (bot)"
    assert persona_name("\u200b") == "persona (bot)" and persona_name("everyone") == "_everyone (bot)"


# -- the formatting code never builds a payload over a limit (property test) ------------------------

handles = st.integers(1, 3).flatmap(
    lambda people: st.lists(
        st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=32),
        min_size=people,
        max_size=people,
    ).map("-".join)
)
names = st.text(min_size=0, max_size=120)
urls = st.one_of(
    st.none(),
    st.just("https://example.com/a.png"),
    st.just("https://example.com/my avatar.png"),
    st.text(max_size=40),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    handle=handles,
    name=names,
    avatar=urls,
    prompt=st.text(max_size=200),
    texts=st.lists(st.text(min_size=1, max_size=5000), min_size=1, max_size=10),
)
def test_every_payload_from_the_formatting_code_is_within_limits(handle, name, avatar, prompt, texts):
    assert HANDLE_RE.match(handle)
    model = ModelRecord(
        guild_id=1,
        handle=handle,
        display_name=clean_display_name(name, handle),
        base_model="gpt2",
        method="lora",
        path="x",
        avatar_url=avatar,
    )
    messages = embed_messages(tweet_embed(model, prompt + text) for text in texts)
    assert sum(len(m) for m in messages) == len(texts)  # split, never dropped
    for embeds in messages:
        assert not message_errors({"embeds": [e.to_dict() for e in embeds]})
    webhook = {
        "content": fit_content(prompt + texts[0]),
        "username": persona_name(model.display_name),
        "avatar_url": tweet_embed(model, "x").author.icon_url,
    }
    assert not message_errors({k: v for k, v in webhook.items() if v is not None}, webhook=True)
    choices = fit_choices(app_commands.Choice(name=f"#{i} {handle} ({name})", value=i) for i in range(30))
    assert not choices_errors([c.to_dict() for c in choices]) and len(choices) == 25
    assert all(len(part) <= 2000 for part in split_content(prompt + "\n".join(texts)))


@settings(max_examples=30, deadline=None)
@given(
    title=st.text(max_size=400),
    fields=st.lists(st.tuples(st.text(max_size=300), st.text(max_size=1500)), max_size=30),
    footer=st.text(max_size=2500),
)
def test_fit_embed_keeps_any_embed_within_limits(title, fields, footer):
    import discord

    embed = discord.Embed(title=title, description="d" * 5000, url="not a url")
    for field_name, value in fields:
        embed.add_field(name=field_name, value=value)
    embed.set_footer(text=footer)
    assert not message_errors({"embeds": [fit_embed(embed).to_dict()]})


def test_webhook_username_is_1_to_80_characters():
    assert len(webhook_username("x" * 200, " (bot)")) == 80 and webhook_username("   ") == "persona"


# -- URLs are checked at input -----------------------------------------------------------------------


def test_urls_are_percent_encoded_or_refused_clearly():
    assert normalize_http_url("https://example.com/my avatar.png") == "https://example.com/my%20avatar.png"
    assert normalize_http_url("https://exämple.com/ä") == "https://xn--exmple-cua.com/%C3%A4"
    for bad, reason in [
        ("ftp://example.com/a.png", "https://"),
        ("https:///a.png", "host"),
        ("https://exa mple.com/a.png", "host"),
        ("https://example.com:99999/", "not a valid URL"),
    ]:
        with pytest.raises(UserError, match=reason):
            normalize_http_url(bad)
    for good in ("https://example.com/my%20avatar.png", "https://cdn.example.com/a.png?size=256#x"):
        assert well_formed_url(normalize_http_url(good))


# -- generation stays within the model's positions -----------------------------------------------------


def test_fit_to_positions_truncates_the_prompt_from_the_left_and_reduces_new_tokens():
    ids = torch.arange(300).repeat(2, 1)
    mask = torch.ones_like(ids)
    cut_ids, cut_mask, sampling = fit_to_positions(
        ids, mask, Sampling(max_new_tokens=160, min_new_tokens=200), 256
    )
    assert (
        cut_ids.shape[1] + sampling.max_new_tokens <= 256
        and sampling.min_new_tokens <= sampling.max_new_tokens
    )
    assert cut_ids[0, -1] == 299 and cut_mask.shape == cut_ids.shape  # the prompt's end is kept
    same = fit_to_positions(ids[:, :10], mask[:, :10], Sampling(max_new_tokens=160), 1024)
    assert same[0].shape[1] == 10 and same[2].max_new_tokens == 160


def test_generation_clamps_to_a_small_models_positions(tmp_path):
    """Defect 5: with a 64-position model every generation failed with IndexError."""
    model = build_tiny_gpt2(tmp_path / "short", n_positions=64)
    generator = Generator(Sampling(max_new_tokens=160, min_new_tokens=10), cache_size=1, device="cpu")
    tweets = generator.generate(model, prompt="We love the city " * 10, n=2)
    assert len(tweets) == 2 and all(t.startswith("We love the city") for t in tweets)


def test_max_new_tokens_setting_leaves_room_for_the_prompt():
    with pytest.raises(SettingsError, match="GENERATION_MAX_NEW_TOKENS"):
        load_settings({"GENERATION_MAX_NEW_TOKENS": "1024"})
    assert load_settings({"GENERATION_MAX_NEW_TOKENS": "512"}).generation_max_new_tokens == 512
