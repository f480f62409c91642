"""Training a persona on a member's own messages in a server: consent, history, then the queue.

Shared by `/voice train` (a member about themselves) and `/train member` (a moderator), so
neither cog reaches into the other.
"""

from __future__ import annotations

import asyncio
import time

import discord

from .core.errors import UserError
from .core.handles import normalize_handle
from .core.ingest import clean_text
from .ui import NO_PINGS, defer_public

HISTORY_PAGE = 100
MAX_COLLECTED = 5_000  # messages per member and guild
MAX_COLLECT_SECONDS = 600
COMMAND_PREFIXES = ("/", "!", "?", ".", "$", "%", ">", "-", "+", ";")
MESSAGE_CONTENT_HELP = (
    "I cannot read message text: the **Message Content** intent is off. Enable it in the Discord developer "
    "portal (Bot → Privileged Gateway Intents) and set `MESSAGE_CONTENT_INTENT=true`, then restart me."
)


class MemberTrainer:
    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core

    async def train(
        self,
        interaction: discord.Interaction,
        member: discord.abc.User,
        *,
        requested_by: int,
        handle: str | None = None,
    ) -> None:
        """Consent, intent, collection, then the queue; the reply says what was queued."""
        if member.bot:
            raise UserError("Bots have no voice to learn.")
        if not await self.core.opted_in(member.id):
            raise UserError(f"{member.mention} has not opted in; they can use `/voice optin` first.")
        if not self.bot.intents.message_content:
            raise UserError(MESSAGE_CONTENT_HELP)
        handle = handle or normalize_handle(member.name.replace(".", "_"))
        await self.core.ensure_can_queue(interaction.guild_id, handle)  # before minutes of reading history
        await defer_public(interaction)
        await self.collect(interaction, member)
        job, kept = await self.core.submit_member_training(
            guild_id=interaction.guild_id,
            handle=handle,
            member_id=member.id,
            member_mention=member.mention,
            display_name=getattr(member, "display_name", member.name),
            avatar_url=member.display_avatar.url,
            requested_by=requested_by,
            channel_id=interaction.channel_id,
        )
        interaction.extras["answered"] = True
        await interaction.edit_original_response(
            content=f"Collected {kept} messages from {member.mention}; "
            f"training `@{handle}` is queued (job #{job.id}).",
            allowed_mentions=NO_PINGS,
        )

    async def sources(self, guild: discord.Guild) -> list[discord.abc.Messageable]:
        """Readable, non-NSFW text channels and active threads the guild did not exclude."""
        excluded = await self.core.excluded_channels(guild.id)
        me = guild.me
        sources: list[discord.abc.Messageable] = [
            c
            for c in guild.text_channels
            if not c.is_nsfw() and c.id not in excluded and c.permissions_for(me).read_message_history
        ]
        try:
            sources += [
                t
                for t in await guild.active_threads()
                if t.parent_id not in excluded and not (t.parent and t.parent.is_nsfw())
            ]
        except discord.HTTPException:
            pass
        return sources

    async def collect(self, interaction: discord.Interaction, member: discord.abc.User) -> None:
        """Newest first, page by page, resumable (a cursor per channel), capped in count and time."""
        guild = interaction.guild
        sources = await self.sources(guild)
        started = time.monotonic()
        total = len(await self.core.collected_messages(guild.id, member.id))
        last_update = 0.0
        for index, channel in enumerate(sources):
            before_id, finished = await self.core.history_cursor(guild.id, member.id, channel.id)
            while not finished and total < MAX_COLLECTED and time.monotonic() - started < MAX_COLLECT_SECONDS:
                before = discord.Object(before_id) if before_id else None
                page = [m async for m in channel.history(limit=HISTORY_PAGE, before=before)]
                mine = [(m.id, clean_text(m.clean_content)) for m in page if self.usable(m, member)]
                mine = [(i, t) for i, t in mine if t]
                finished = len(page) < HISTORY_PAGE
                before_id = page[-1].id if page else before_id
                await self.core.save_history_page(guild.id, member.id, channel.id, mine, before_id, finished)
                total += len(mine)
                if time.monotonic() - last_update > 3:
                    last_update = time.monotonic()
                    await interaction.edit_original_response(
                        content=f"Reading history: channel {index + 1}/{len(sources)}, "
                        f"{total} messages found..."
                    )
                await asyncio.sleep(0)

    @staticmethod
    def usable(message: discord.Message, member: discord.abc.User) -> bool:
        """The member's own ordinary message, not a command for some bot."""
        return (
            message.author.id == member.id
            and not message.author.bot
            and message.type == discord.MessageType.default
            and bool(message.content)
            and not message.content.startswith(COMMAND_PREFIXES)
        )
