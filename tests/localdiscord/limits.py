"""Discord's documented limits and how it refuses a payload over them (50035 "Invalid Form Body"),
plus the constants (permissions, intents, message types) and ids the local server uses."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

ALL_PERMISSIONS = (1 << 51) - 1
MANAGE_GUILD = 1 << 5
MANAGE_WEBHOOKS = 1 << 29
BASIC_MEMBER = (
    (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
)  # view, send, embed, attach, history, use commands
OPTION_TYPES = {
    "subcommand": 1,
    "group": 2,
    "string": 3,
    "integer": 4,
    "boolean": 5,
    "user": 6,
    "channel": 7,
    "role": 8,
    "mentionable": 9,
    "number": 10,
    "attachment": 11,
}

GUILDS_INTENT = 1 << 0
GUILD_MESSAGES_INTENT = 1 << 9
MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT_INTENT  # members, presences, message content
# resources/message "Message Types": the ones tests send.
MESSAGE_DEFAULT, MESSAGE_USER_JOIN, MESSAGE_PINNED, MESSAGE_REPLY = 0, 7, 6, 19
SYSTEM_MESSAGE_TYPES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 21, 22, 24, 25}

_counter = itertools.count()
DISCORD_EPOCH_MS = 1420070400000


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """JSON with exactly `application/json` (discord.py compares the header verbatim)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


# -- Discord's documented limits ---------------------------------------------------------------------
# resources/message "Create Message": content up to 2000 characters, up to 10 embeds.
# resources/message "Embed Limits": per-field limits and 6000 characters in all embeds of a message,
#   leading and trailing whitespace not counted.
# interactions/receiving-and-responding "Autocomplete": max of 25 choices; interactions/application-
#   commands "Application Command Option Choice Structure": name 1-100 characters, string value <= 100.
# resources/webhook "Create Webhook" + resources/user "Usernames and Nicknames": names 1-80 characters,
#   no "clyde"/"discord" (case-insensitive); zero-width characters removed, whitespace trimmed first.
# interactions/receiving-and-responding: the first response within 3 seconds, else the token is invalid.
CONTENT_LIMIT = 2000
EMBED_LIMITS = {"title": 256, "description": 4096}
EMBED_TOTAL = 6000
CALLBACK_DEADLINE_S = 3.0
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


def well_formed_url(url: Any) -> bool:
    """An absolute http(s) (or attachment://) URL made only of the characters RFC 3986 allows."""
    if not isinstance(url, str) or not _URL_CHARS.match(url) or re.search(r"%(?![0-9A-Fa-f]{2})", url):
        return False
    if url.startswith("attachment://"):
        return len(url) > len("attachment://")
    try:
        parts = urlsplit(url)
        if parts.port is not None and parts.port == 0:
            return False
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _error(errors: dict, path: list, code: str, message: str) -> None:
    node = errors
    for key in path:
        node = node.setdefault(str(key), {})
    node.setdefault("_errors", []).append({"code": code, "message": message})


def _check_length(errors: dict, path: list, value: Any, limit: int, minimum: int = 0) -> int:
    """Length as Discord counts it (trimmed); records an error when outside [minimum, limit]."""
    length = len(value.strip()) if isinstance(value, str) else 0
    if length > limit:
        _error(errors, path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    elif length < minimum:
        _error(errors, path, "BASE_TYPE_MIN_LENGTH", f"Must be {minimum} or more in length.")
    return length


def _check_url(errors: dict, path: list, value: Any) -> None:
    if value is not None and not well_formed_url(value):
        _error(errors, path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")


def _check_embed(errors: dict, i: int, embed: dict) -> int:
    total = sum(
        _check_length(errors, ["embeds", i, key], embed.get(key), limit)
        for key, limit in EMBED_LIMITS.items()
    )
    fields = embed.get("fields") or []
    if len(fields) > 25:
        _error(errors, ["embeds", i, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for j, f in enumerate(fields):
        total += _check_length(errors, ["embeds", i, "fields", j, "name"], f.get("name"), 256, 1)
        total += _check_length(errors, ["embeds", i, "fields", j, "value"], f.get("value"), 1024, 1)
    author, footer = embed.get("author") or {}, embed.get("footer") or {}
    if author:
        total += _check_length(errors, ["embeds", i, "author", "name"], author.get("name"), 256, 1)
    if footer:
        total += _check_length(errors, ["embeds", i, "footer", "text"], footer.get("text"), 2048, 1)
    for holder, key, path in (
        (embed, "url", ["url"]),
        (author, "url", ["author", "url"]),
        (author, "icon_url", ["author", "icon_url"]),
        (footer, "icon_url", ["footer", "icon_url"]),
        (embed.get("thumbnail") or {}, "url", ["thumbnail", "url"]),
        (embed.get("image") or {}, "url", ["image", "url"]),
    ):
        _check_url(errors, ["embeds", i, *path], holder.get(key))
    return total


def message_errors(body: dict | None, *, webhook: bool = False) -> dict:
    """Discord's "errors" object for a message payload; empty when Discord would accept it."""
    body, errors = body or {}, {}
    _check_length(errors, ["content"], body.get("content"), CONTENT_LIMIT)
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        _error(errors, ["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if sum(_check_embed(errors, i, embed) for i, embed in enumerate(embeds)) > EMBED_TOTAL:
        _error(
            errors, ["embeds"], "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {EMBED_TOTAL}"
        )
    if webhook:
        if body.get("username") is not None:
            webhook_name_errors(errors, ["username"], body["username"])
        _check_url(errors, ["avatar_url"], body.get("avatar_url"))
    return errors


def webhook_name_errors(errors: dict, path: list, name: Any) -> dict:
    cleaned = " ".join(_INVISIBLE.sub("", name if isinstance(name, str) else "").split())
    _check_length(errors, path, cleaned, 80, 1)
    for word in ("discord", "clyde"):
        if word in cleaned.lower():
            _error(errors, path, "USERNAME_INVALID_CONTAINS", f'Username cannot contain "{word}"')
    return errors


def choices_errors(choices: Any) -> dict:
    errors: dict = {}
    if not isinstance(choices, list) or len(choices) > 25:
        _error(errors, ["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        return errors
    for i, choice in enumerate(choices):
        _check_length(errors, ["data", "choices", i, "name"], choice.get("name"), 100, 1)
        if isinstance(choice.get("value"), str):
            _check_length(errors, ["data", "choices", i, "value"], choice["value"], 100)
    return errors


def invalid_form(errors: dict) -> web.Response:
    return json_response({"message": "Invalid Form Body", "code": 50035, "errors": errors}, status=400)


def unknown_webhook() -> web.Response:
    return json_response({"message": "Unknown Webhook", "code": 10015}, status=404)


def snowflake() -> int:
    """Timestamp in the high bits, like Discord's: discord.py reads creation times from ids."""
    return (int(time.time() * 1000 - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()
