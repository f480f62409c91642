"""Discord's documented limits, and fitting every outgoing payload to them before it is sent.

Discord refuses a whole request (400, code 50035 "Invalid Form Body") when one field in it is
over a limit, so an over-long answer would reach nobody. Every cog builds its payloads through
these helpers: over a limit, text is trimmed with an ellipsis and many embeds are split over
several messages; nothing here raises.

References (discord-api-docs):
- Message content, at most 10 embeds: resources/message "Create Message" (JSON params).
- Embed fields and the 6,000-character total: resources/message "Embed Limits".
- Autocomplete answers: interactions/receiving-and-responding "Autocomplete" (max of 25
  choices) and interactions/application-commands "Application Command Option Choice Structure"
  (name 1-100 characters, string value up to 100).
- Webhook names: resources/webhook "Create Webhook" (no "clyde" or "discord", up to 80
  characters) and resources/user "Usernames and Nicknames" (zero-width characters are removed,
  whitespace trimmed, so a zero-width space cannot hide a forbidden word).
- URL fields must be well formed absolute URLs (bot/core/urls.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

import discord
from discord import app_commands

from bot.core.urls import well_formed_http_url

CONTENT = 2000
EMBEDS_PER_MESSAGE = 10
TITLE = 256
DESCRIPTION = 4096
FIELDS = 25
FIELD_NAME = 256
FIELD_VALUE = 1024
FOOTER = 2048
AUTHOR_NAME = 256
EMBED_TOTAL = 6000  # title, description, field names and values, footer and author name of all embeds
CHOICES = 25
CHOICE_NAME = 100
CHOICE_VALUE = 100
WEBHOOK_NAME = 80
ELLIPSIS = "…"

# Characters Discord removes from names (zero-width and other non-rendering ones).
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# Letters swapped for ASCII look-alikes, which Discord neither strips nor refuses:
# "Discord" -> "Disc0rd", "Clyde" -> "CIyde" (capital i).
_FORBIDDEN_IN_NAMES = re.compile(r"discord|clyde", re.IGNORECASE)

Choice = TypeVar("Choice", bound=app_commands.Choice)


def trim(text: str | None, limit: int) -> str:
    """The text, or its start and an ellipsis when it is longer than `limit` characters."""
    text = text or ""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def fit_content(text: str | None) -> str:
    return trim(text, CONTENT)


def split_content(text: str, limit: int = CONTENT) -> list[str]:
    """Text over several messages, cut at line ends where possible."""
    chunks: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return chunks + ([text] if text or not chunks else [])


def embed_length(embed: discord.Embed) -> int:
    """The characters that count toward the 6,000 per message (discord.py's len(embed))."""
    return len(embed)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """A copy of the embed within every per-embed limit, with malformed URLs left out."""
    data = embed.to_dict()
    for key, limit in (("title", TITLE), ("description", DESCRIPTION)):
        if key in data:
            data[key] = trim(data[key], limit)
    # Discord trims whitespace, and then needs an author name, a footer text, a field name and value.
    for key, text_key, limit in (("author", "name", AUTHOR_NAME), ("footer", "text", FOOTER)):
        if key in data:
            data[key][text_key] = trim(data[key].get(text_key), limit)
            if not data[key][text_key].strip():
                del data[key]
    if "fields" in data:
        data["fields"] = [
            dict(
                f,
                name=_non_blank(trim(f.get("name"), FIELD_NAME)),
                value=_non_blank(trim(f.get("value"), FIELD_VALUE)),
            )
            for f in data["fields"][:FIELDS]
        ]
    _drop_bad_urls(data)
    fitted = discord.Embed.from_dict(data)
    excess = embed_length(fitted) - EMBED_TOTAL
    if excess > 0 and fitted.description:
        fitted.description = trim(fitted.description, max(1, len(fitted.description) - excess))
    while embed_length(fitted) > EMBED_TOTAL and fitted.fields:
        fitted.remove_field(-1)
    return fitted


def _non_blank(text: str) -> str:
    return text if text.strip() else "\u2014"


def _drop_bad_urls(data: dict[str, Any]) -> None:
    """Make each URL field well formed, or leave it out (one bad URL refuses the whole message)."""
    places = [
        (data, "url"),
        (data.get("author"), "url"),
        (data.get("author"), "icon_url"),
        (data.get("footer"), "icon_url"),
        (data.get("thumbnail"), "url"),
        (data.get("image"), "url"),
    ]
    for holder, key in places:
        if holder and holder.get(key) is not None:
            url = str(holder[key])
            url = url if url.startswith("attachment://") else well_formed_http_url(url)
            if url is None:
                del holder[key]
            else:
                holder[key] = url
    for key in ("thumbnail", "image"):
        if key in data and not data[key].get("url"):
            del data[key]


def embed_messages(embeds: Iterable[discord.Embed]) -> list[list[discord.Embed]]:
    """Embeds fitted and grouped into messages of at most 10 embeds and 6,000 characters."""
    messages: list[list[discord.Embed]] = []
    size = 0
    for embed in map(fit_embed, embeds):
        length = embed_length(embed)
        if not messages or len(messages[-1]) >= EMBEDS_PER_MESSAGE or size + length > EMBED_TOTAL:
            messages.append([])
            size = 0
        messages[-1].append(embed)
        size += length
    return messages


def fit_choices(choices: Iterable[Choice]) -> list[Choice]:
    """At most 25 autocomplete choices, each named with 1-100 characters.

    A string value cannot be shortened without changing what it selects, so a choice whose
    value is over 100 characters is left out instead.
    """
    fitted = []
    for choice in choices:
        if isinstance(choice.value, str) and not 1 <= len(choice.value) <= CHOICE_VALUE:
            continue
        name = trim(" ".join(choice.name.split()), CHOICE_NAME) or trim(str(choice.value), CHOICE_NAME)
        fitted.append(app_commands.Choice(name=name, value=choice.value))
        if len(fitted) == CHOICES:
            break
    return fitted


def webhook_username(name: str, suffix: str = "") -> str:
    """A webhook username Discord accepts: 1-80 characters, no "discord"/"clyde", not a mention word."""
    name = " ".join(_INVISIBLE.sub("", name or "").split())
    name = _FORBIDDEN_IN_NAMES.sub(_look_alike, name) or "persona"
    if name.lower() in {"everyone", "here"}:
        name = f"_{name}"
    return trim(name, WEBHOOK_NAME - len(suffix)) + suffix


def _look_alike(match: re.Match) -> str:
    word = match.group(0)
    if word.lower() == "discord":
        return word[:4] + "0" + word[5:]  # disc0rd
    return word[0] + "I" + word[2:]  # cIyde


def safe_url(url: str | None) -> str | None:
    """A URL fit for an embed or webhook avatar field, or None."""
    return well_formed_http_url(url) if url else None
