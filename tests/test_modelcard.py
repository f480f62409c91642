"""Reading model cards for hub imports: huggingtweets' published layouts, cyborgs, and our own cards."""

# ruff: noqa: E501 - the cards' lines are as long as huggingtweets wrote them

import pytest
from huggingface_hub import ModelCard, metadata_load

from bot.core.personas.modelcard import parse_card, render_card
from tests.hub_cards import (
    AMIR,
    CYBORG_CARD,
    HUGGINGTWEETS_CARD,
    JS_THRILL_AVATAR,
    JS_THRILL_NAME,
    JS_THRILL_NEWER,
    JS_THRILL_STATS,
    ZOE,
    older_layout_card,
    published_card,
)


def test_the_published_js_thrill_card_older_layout_and_mojibake():
    card = parse_card(published_card())
    # "john stuart placebo ðŸ’Š ðŸ¤– AI Bot ": the template of the time wrote "USER_NAME 🤖 AI Bot ".
    assert card.display_name == JS_THRILL_NAME
    assert card.avatar_url == JS_THRILL_AVATAR
    assert card.stats == JS_THRILL_STATS
    assert card.prompt == "My dream is"
    assert card.base_model is None  # GPT-2 by its config.json, not said in the card


def test_newer_layout_one_person():
    card = parse_card(HUGGINGTWEETS_CARD)
    assert card.display_name == "JS Thrill"  # the "🤖 AI BOT 🤖" line above it is not the name
    assert card.avatar_urls == [JS_THRILL_NEWER["picture"]]  # the two display:none slots are not
    assert card.stats == {"downloaded": 3250, "retweets": 40, "short": 449, "kept": 2761}


def test_cyborg_card_has_a_name_picture_and_data_column_per_person():
    card = parse_card(CYBORG_CARD)
    assert card.display_name == "Zoë Codes ✨ & Amir H."  # "🤖 AI CYBORG 🤖" is not part of it
    assert card.avatar_urls == [ZOE["picture"], AMIR["picture"]]  # the order they were typed in
    assert card.avatar_url == ZOE["picture"]  # a webhook has one picture: the first person's
    figures = ("downloaded", "retweets", "short", "kept")
    assert card.stats["people"] == [
        {"name": "Zoë Codes ✨", **{k: ZOE[k] for k in figures}},
        {"name": "Amir H.", **{k: AMIR[k] for k in figures}},
    ]
    assert {k: card.stats[k] for k in figures} == {k: ZOE[k] + AMIR[k] for k in figures}


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("Ada Lovelace 🤖 AI Bot ", "Ada Lovelace"),
        ("Ada Lovelace AI Bot", "Ada Lovelace"),
        ("Ada &amp; Grace 🤖 AI Cyborg", "Ada & Grace"),
        ("CafÃ© Owner â˜• ðŸ¤– AI Bot ", "Café Owner ☕"),  # double-encoded UTF-8
        ("🤖 AI Bot", None),  # nothing but the decoration: the handle is used instead
    ],
)
def test_older_layout_decorations_are_removed_and_mojibake_repaired(written, name):
    card = parse_card(older_layout_card(written))
    assert card.display_name == name
    assert card.stats == {"downloaded": 1250, "retweets": 30, "short": 20, "kept": 1200}


def test_in_the_newer_layout_the_name_line_is_the_name_whatever_it_ends_with():
    card = parse_card(newer := HUGGINGTWEETS_CARD.replace(">JS Thrill<", ">Kim, Not An AI Bot<"))
    assert card.display_name == "Kim, Not An AI Bot"
    assert "@js_thrill" in newer and card.display_name != "js_thrill"  # the @handle line is not the name


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("javascript:alert(1)", None),
        ("not a url", None),
        ("ftp://example.com/a.png", None),
        ("https://exa mple.com/a.png", None),
        ("https://example.com/my pic.png", "https://example.com/my%20pic.png"),  # made well formed
    ],
)
def test_a_picture_is_checked_like_any_avatar(url, kept):
    card = parse_card(older_layout_card("Ada Lovelace 🤖 AI Bot", url))
    assert card.avatar_url == kept
    assert card.display_name == "Ada Lovelace"  # the rest of the card still counts


def test_broken_front_matter_and_a_card_without_a_header():
    card = parse_card("---\nwidget: [unclosed\n---\n\n| Tweets downloaded | 1,024 |\n| Tweets kept | 900 |\n")
    assert card.stats == {"downloaded": 1024, "kept": 900}
    assert (card.display_name, card.avatar_url, card.prompt) == (None, None, None)
    assert parse_card("") == parse_card("just some text")


def _render(stats, display_name="Ada & <Grace>", avatar_url="https://example.com/a b.png"):
    return render_card(
        handle="ada",
        display_name=display_name,
        base_model="gpt2",
        method="lora",
        stats=stats,
        config={"epochs": 2, "learning_rate": 1e-4, "batch_size": 8, "block_size": 64, "seed": 1},
        metrics={"initial_val_loss": 4.0, "val_loss": 3.0, "steps": 12},
        avatar_url=avatar_url,
    )


def test_our_exported_card_reads_back_with_the_same_parser():
    stats = {"downloaded": 1000, "too_long": 3, "retweets": 10, "short": 20, "duplicates": 5, "kept": 962}
    card = parse_card(_render(stats))
    assert card.display_name == "Ada & <Grace>"
    assert card.avatar_url == "https://example.com/a%20b.png"
    assert card.stats == stats
    assert (card.base_model, card.prompt) == ("gpt2", "My dream is")
    assert parse_card(_render(stats, avatar_url=None)).avatar_url is None


def test_our_multi_person_card_reads_back_a_column_per_person():
    people = [
        {"name": "alice", "handle": "alice", "downloaded": 300, "retweets": 1, "short": 2, "kept": 297},
        {"name": "bob", "handle": "bob", "downloaded": 200, "retweets": 0, "short": 5, "kept": 195},
    ]
    totals = {k: people[0][k] + people[1][k] for k in ("downloaded", "retweets", "short", "kept")}
    card = parse_card(_render(dict(totals, people=people), display_name="alice & bob"))
    assert card.display_name == "alice & bob"
    assert card.stats == dict(totals, people=[{k: v for k, v in p.items() if k != "handle"} for p in people])


def test_our_exported_card_front_matter_loads_through_huggingface_hub(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(_render({"kept": 962}), encoding="utf-8")
    metadata = metadata_load(path)
    assert metadata["base_model"] == "gpt2" and metadata["language"] == "en"
    assert "huggingtweets" in metadata["tags"] and metadata["widget"] == [{"text": "My dream is"}]
    assert ModelCard.load(path).data.base_model == "gpt2"
