"""Slash-command options validated once, where Discord hands them over (app_commands.Transformer).

A bad value fails before the command runs, with the core's own short explanation (discord/ui.py shows
the UserError behind a TransformerError). The core still checks what it is given, for the CLI;
the cogs do not check again.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.core.conversation import parse_duration, parse_interval
from bot.core.handles import normalize_handle
from bot.core.urls import NO_AVATAR, normalize_http_url


class HandleTransformer(app_commands.Transformer):
    """'@JS_Thrill' -> 'js_thrill' (or the reason it cannot be a handle)."""

    async def transform(self, interaction: discord.Interaction, value: str) -> str:
        return normalize_handle(value)


class IntervalTransformer(app_commands.Transformer):
    """'2h', '1h30m', '90 minutes' -> seconds, between 5 minutes and 7 days."""

    async def transform(self, interaction: discord.Interaction, value: str) -> int:
        parse_duration(value)  # a malformed value gets the format help, not the range
        return parse_interval(value)


class DurationTransformer(app_commands.Transformer):
    """'10m' -> 600 seconds."""

    async def transform(self, interaction: discord.Interaction, value: str) -> int:
        return parse_duration(value)


class AvatarUrlTransformer(app_commands.Transformer):
    """'https://example.com/my avatar.png' -> '.../my%20avatar.png': a URL Discord accepts in
    embeds and webhooks (bot/core/urls.py), or the reason it is not one."""

    async def transform(self, interaction: discord.Interaction, value: str) -> str:
        return normalize_http_url(value, what="The avatar URL")


class AvatarEditTransformer(AvatarUrlTransformer):
    """An avatar URL as above, or 'none' (remove the picture), passed on as NO_AVATAR."""

    async def transform(self, interaction: discord.Interaction, value: str) -> str:
        if value.strip().lower() == NO_AVATAR:
            return NO_AVATAR
        return await super().transform(interaction, value)


Handle = app_commands.Transform[str, HandleTransformer]
Interval = app_commands.Transform[int, IntervalTransformer]
Duration = app_commands.Transform[int, DurationTransformer]
AvatarUrl = app_commands.Transform[str, AvatarUrlTransformer]
AvatarOrNone = app_commands.Transform[str, AvatarEditTransformer]
