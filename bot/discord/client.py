"""The Discord adapter: a `commands.Bot` that owns the core and loads one cog per feature."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import discord
import yarl
from discord import app_commands
from discord.ext import commands, tasks

from bot.config import Settings
from bot.core.service import PersonaService
from bot.core.shards import GuildShards
from bot.discord.ui import send_error, user_message_for
from bot.health import touch_heartbeat

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.discord.cogs.training",
    "bot.discord.cogs.impersonate",
    "bot.discord.cogs.models",
    "bot.discord.cogs.autopost",
    "bot.discord.cogs.voice",
    "bot.discord.cogs.chatter",
    "bot.discord.cogs.realorfake",
)


def apply_endpoint_overrides(settings: Settings) -> None:
    """Point discord.py at another Discord-compatible server (the tests' local one)."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def bot_intents(settings: Settings) -> discord.Intents:
    # Slash commands arrive as interactions and need no privileged intent; `guilds` gives us
    # channels and roles for permission checks and scheduled posts; `guild_messages` (not
    # privileged) the messages personas answer (/chatter: replies to their posts, mentions,
    # chime-ins), whose text stays empty without Message Content except where the bot is
    # mentioned. Message Content, when the admin enabled it, lets an answer read its message as
    # a prompt. Training never needs it (the bot does not train on messages it reads: members
    # bring their data packages).
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = settings.message_content_intent
    return intents


class TweetalikeBot(commands.Bot):
    def __init__(
        self,
        settings: Settings,
        core: PersonaService | None = None,
        clock: Callable[[], float] = time.time,
        **sharding,
    ):
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(settings),
            help_command=None,
            # Nothing the bot sends pings anyone unless a message says so explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
            **sharding,
        )
        self.settings = settings
        self.clock = clock  # schedules read time through this, so tests can move it
        self.core = core or PersonaService(settings, clock=clock)
        # Training progress and completion arrive as discord.py events (on_training_progress,
        # on_training_finished), which cogs handle with @commands.Cog.listener().
        self.core.set_event_sink(self.dispatch)
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        await self.core.start()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.settings.dev_guild_id:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("Synced %d commands to the dev guild %s", len(synced), self.settings.dev_guild_id)
        else:
            synced = await self.tree.sync()
            log.info("Synced %d global commands (they can take up to an hour to appear)", len(synced))
        self.heartbeat.start()

    @tasks.loop(seconds=30)
    async def heartbeat(self) -> None:
        """Touch a file while connected, for the container health check."""
        if self.is_ready() and not self.is_closed():
            await asyncio.to_thread(touch_heartbeat, self.settings.database_path)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: messages are only for the chatter cog's listener (commands.Bot would
        otherwise try `@bot something` as a text command and log every miss)."""

    def guild_shards(self) -> GuildShards | None:
        """The guilds this process serves: None when unsharded (all of them)."""
        return None

    async def on_ready(self) -> None:
        shards = self.guild_shards()
        log.info(
            "Logged in as %s (%s) in %d guilds%s",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
            f" on {shards.describe()}" if shards else "",
        )

    async def close(self) -> None:
        self.heartbeat.cancel()
        try:
            await super().close()
        finally:
            await self.core.close()

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """One place that turns every failure into a short ephemeral answer."""
        message, unexpected = user_message_for(error)
        if unexpected:
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("Command /%s failed", command, exc_info=error)
        await send_error(interaction, message)


class ShardedTweetalikeBot(TweetalikeBot, commands.AutoShardedBot):
    """The same bot over several gateway connections (discord.py's AutoShardedBot), each a shard.

    SHARD_COUNT is the whole bot's number of shards (`auto`: Discord's recommendation), SHARD_IDS
    the ones this process runs; other processes on the same database run the rest.
    """

    def __init__(
        self, settings: Settings, core: PersonaService | None = None, clock: Callable[[], float] = time.time
    ):
        count = settings.shard_count if isinstance(settings.shard_count, int) else None
        shards = settings.shards
        super().__init__(settings, core, clock, shard_count=count, shard_ids=list(shards) if shards else None)

    def guild_shards(self) -> GuildShards | None:
        if self.shard_count is None:  # `auto`, before Discord said how many
            return None
        return GuildShards(self.shard_count, tuple(self.shard_ids or range(self.shard_count)))


def create_bot(
    settings: Settings, core: PersonaService | None = None, clock: Callable[[], float] = time.time
) -> TweetalikeBot:
    """The unsharded bot by default (SHARD_COUNT=0), as always; the sharded one when asked for."""
    sharded = settings.shard_count != 0
    return (ShardedTweetalikeBot if sharded else TweetalikeBot)(settings, core, clock)
