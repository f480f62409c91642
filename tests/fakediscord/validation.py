"""The limits Discord enforces on what a bot sends, so tests catch what production would reject.

Only limits a bot realistically hits are checked: message length, embed sizes, component
counts, autocomplete choices and the command names/descriptions of a synced tree.
"""

from __future__ import annotations

import re

from .errors import DiscordError, form_error
from .state import walk_components

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
EMBED_LIMITS = {"title": 256, "description": 4096}
MAX_FIELDS, MAX_FIELD_NAME, MAX_FIELD_VALUE = 25, 256, 1024
MAX_FILES = 10
MAX_CHOICES, MAX_CHOICE_NAME = 25, 100
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def validate_message(body: dict, file_count: int, *, edit: bool = False) -> None:
    """Raises the error Discord answers for an oversized or empty message body."""
    content = body.get("content")
    if content is not None and len(content) > MAX_CONTENT:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for index, embed in enumerate(embeds):
        total += _validate_embed(index, embed)
    if total > MAX_EMBED_TOTAL:
        raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    if file_count > MAX_FILES:
        raise form_error("files", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")
    _validate_components(body.get("components") or [], body.get("flags") or 0)
    has_attachments = file_count or body.get("attachments")
    if not edit and not (content or embeds or has_attachments or body.get("components")
                         or body.get("sticker_ids") or body.get("poll")):
        raise DiscordError(400, 50006, "Cannot send an empty message")


def _validate_embed(index: int, embed: dict) -> int:
    size = 0
    for key, limit in EMBED_LIMITS.items():
        value = embed.get(key) or ""
        if len(value) > limit:
            raise form_error(f"embeds.{index}.{key}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
        size += len(value)
    fields = embed.get("fields") or []
    if len(fields) > MAX_FIELDS:
        raise form_error(f"embeds.{index}.fields", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FIELDS} or fewer in length.")
    for number, item in enumerate(fields):
        name, value = item.get("name") or "", item.get("value") or ""
        if not name or len(name) > MAX_FIELD_NAME:
            raise form_error(f"embeds.{index}.fields.{number}.name", "BASE_TYPE_BAD_LENGTH",
                             f"Must be between 1 and {MAX_FIELD_NAME} in length.")
        if not value or len(value) > MAX_FIELD_VALUE:
            raise form_error(f"embeds.{index}.fields.{number}.value", "BASE_TYPE_BAD_LENGTH",
                             f"Must be between 1 and {MAX_FIELD_VALUE} in length.")
        size += len(name) + len(value)
    size += len((embed.get("footer") or {}).get("text") or "") + len((embed.get("author") or {}).get("name") or "")
    return size


def _validate_components(components: list[dict], flags: int) -> None:
    if flags & (1 << 15):  # components v2: a looser layout, only check custom_id uniqueness
        _unique_custom_ids(components)
        return
    if len(components) > 5:
        raise form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    for index, row in enumerate(components):
        children = row.get("components") or []
        if row.get("type") == 1 and not 1 <= len(children) <= 5:
            raise form_error(f"components.{index}.components", "BASE_TYPE_BAD_LENGTH",
                             "Must be between 1 and 5 in length.")
    _unique_custom_ids(components)


def _unique_custom_ids(components: list[dict]) -> None:
    seen: set[str] = set()
    for component in walk_components(components):
        custom_id = component.get("custom_id")
        if custom_id is None:
            continue
        if len(custom_id) > 100:
            raise form_error("components", "BASE_TYPE_MAX_LENGTH", "custom_id must be 100 or fewer in length.")
        if custom_id in seen:
            raise form_error("components", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
        seen.add(custom_id)


def validate_choices(data: dict) -> None:
    choices = data.get("choices") or []
    if len(choices) > MAX_CHOICES:
        raise form_error("data.choices", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")
    for index, choice in enumerate(choices):
        if not 1 <= len(str(choice.get("name", ""))) <= MAX_CHOICE_NAME:
            raise form_error(f"data.choices.{index}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        value = choice.get("value")
        if isinstance(value, str) and len(value) > 100:
            raise form_error(f"data.choices.{index}.value", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")


def validate_commands(commands: list[dict]) -> None:
    """What Discord rejects in a bulk overwrite that discord.py does not check itself."""
    if len(commands) > 100:
        raise form_error("commands", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    seen: set[tuple[str, int]] = set()
    for index, command in enumerate(commands):
        kind = command.get("type", 1)
        key = (command.get("name", ""), kind)
        if key in seen:
            raise form_error(f"{index}.name", "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique")
        seen.add(key)
        if kind == 1:
            _validate_command_node(str(index), command)


def _validate_command_node(path: str, node: dict) -> None:
    name = node.get("name", "")
    if not COMMAND_NAME.match(name) or name != name.lower():
        raise form_error(f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if not 1 <= len(node.get("description", "")) <= 100:
        raise form_error(f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    options = node.get("options") or []
    if len(options) > 25:
        raise form_error(f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    for number, option in enumerate(options):
        if option.get("type") in (1, 2):
            _validate_command_node(f"{path}.options.{number}", option)
            continue
        _validate_command_node(f"{path}.options.{number}", {**option, "options": []})
        if option.get("required"):
            if seen_optional:
                raise form_error(f"{path}.options.{number}", "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                 "Required options must be placed before non-required options")
        else:
            seen_optional = True
        if len(option.get("choices") or []) > MAX_CHOICES:
            raise form_error(f"{path}.options.{number}.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
