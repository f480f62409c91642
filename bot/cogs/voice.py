"""/voice: members choose whether the bot may learn their voice; "Who made this?" lookups."""

from __future__ import annotations

import asyncio
import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from ..core.errors import UserError
from ..core.ingest import clean_text
from ..core.registry import GuildData, normalize_handle
from ..core.voices import Voices
from ..ui import NO_PINGS, defer_public

log = logging.getLogger(__name__)

HISTORY_PAGE = 100
MAX_COLLECTED = 5_000  # messages per member and guild
MAX_COLLECT_SECONDS = 600
COMMAND_PREFIXES = ("/", "!", "?", ".", "$", "%", ">", "-", "+", ";")
MESSAGE_CONTENT_HELP = (
    "I cannot read message text: the **Message Content** intent is off. Enable it in the Discord developer "
    "portal (Bot → Privileged Gateway Intents) and set `MESSAGE_CONTENT_INTENT=true`, then restart me."
)


class VoiceCog(commands.Cog):
    voice = app_commands.Group(name="voice", description="Your own voice: consent and your data", guild_only=True)

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.voices = Voices(bot.core)
        self.who_made_this = app_commands.ContextMenu(name="Who made this?", callback=self.lookup)
        self.who_made_this.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.who_made_this)
        if not self.bot.intents.message_content:
            log.warning("Message Content intent is off: /train member and /voice train cannot read history. %s",
                        MESSAGE_CONTENT_HELP)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.who_made_this.name, type=self.who_made_this.type)

    # -- consent ----------------------------------------------------------------------------------

    @voice.command(name="optin", description="Allow personas to be trained on your messages in this server")
    async def optin(self, interaction: discord.Interaction) -> None:
        await self.voices.set_consent(interaction.user.id, True)
        await interaction.response.send_message(
            "You opted in: moderators can train a persona on your messages here (`/train member`), and you "
            "can train your own with `/voice train`. `/voice optout` undoes it everywhere.", ephemeral=True)

    @voice.command(name="optout", description="Withdraw consent: delete every persona trained on your messages")
    async def optout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.voices.opt_out(interaction.user.id)
        await interaction.followup.send(self.describe_erasure("You opted out.", report), ephemeral=True)

    @voice.command(name="mydata", description="Which personas in this server used your messages")
    async def mydata(self, interaction: discord.Interaction) -> None:
        personas = await self.voices.personas_using(interaction.user.id, interaction.guild_id)
        collected = await self.voices.collected(interaction.guild_id, interaction.user.id)
        consent = "opted in" if await self.voices.opted_in(interaction.user.id) else "not opted in"
        names = ", ".join(f"`@{h}`" for _, h in personas) or "none"
        await interaction.response.send_message(
            f"You are {consent}. Personas here trained on your messages: {names}. "
            f"Messages of yours I keep for training here: {len(collected)}.", ephemeral=True)

    @voice.command(name="delete", description="Erase your collected messages and personas trained on them, here")
    async def delete(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.voices.erase(interaction.user.id, interaction.guild_id)
        await interaction.followup.send(self.describe_erasure("Done.", report), ephemeral=True)

    @staticmethod
    def describe_erasure(head: str, report) -> str:
        personas = ", ".join(f"`@{h}`" for _, h in report.personas) or "none"
        return (f"{head} Deleted personas: {personas}; schedules removed: {report.schedules}; "
                f"trainings cancelled: {report.jobs_cancelled}; collected messages deleted: {report.messages}.")

    # -- training on a member's messages ------------------------------------------------------------

    @voice.command(name="train", description="Train a persona on your own messages in this server")
    async def train_me(self, interaction: discord.Interaction) -> None:
        await self.train_member(interaction, interaction.user, requested_by=interaction.user.id)

    async def train_member(self, interaction: discord.Interaction, member: discord.abc.User, *, requested_by: int,
                           handle: str | None = None) -> None:
        """Shared by /voice train and /train member: consent, intent, collection, then the queue."""
        if member.bot:
            raise UserError("Bots have no voice to learn.")
        if not await self.voices.opted_in(member.id):
            raise UserError(f"{member.mention} has not opted in; they can use `/voice optin` first.")
        if not self.bot.intents.message_content:
            raise UserError(MESSAGE_CONTENT_HELP)
        handle = normalize_handle(handle or member.name.replace(".", "_"))
        await self.core.ensure_can_queue(interaction.guild_id, handle)
        await defer_public(interaction)
        texts = await self.collect(interaction, member)
        from ..core.ingest import RawPost, clean_posts

        tweets, stats = clean_posts([RawPost(t) for t in texts])
        if sum(len(t) for t in tweets) < 6000:
            raise UserError(f"Only {stats.kept} usable messages from {member.mention} here "
                            f"({sum(len(t) for t in tweets):,} characters; 6,000 are needed).")
        job = await self.core.submit_training(
            guild_id=interaction.guild_id, handle=handle, tweets=tweets, stats=stats.as_dict(),
            display_name=getattr(member, "display_name", member.name), avatar_url=member.display_avatar.url,
            requested_by=requested_by, channel_id=interaction.channel_id, source_user_id=member.id,
        )
        interaction.extras["answered"] = True
        await interaction.edit_original_response(
            content=f"Collected {stats.kept} messages from {member.mention}; training `@{handle}` is queued (job #{job.id}).",
            allowed_mentions=NO_PINGS)

    async def collect(self, interaction: discord.Interaction, member: discord.abc.User) -> list[str]:
        """Newest first, page by page, resumable (a cursor per channel), capped in count and time."""
        guild = interaction.guild
        excluded = await self.excluded_channels(guild.id)
        me = guild.me
        sources: list[discord.abc.Messageable] = [
            c for c in guild.text_channels
            if not c.is_nsfw() and c.id not in excluded and c.permissions_for(me).read_message_history
        ]
        try:
            sources += [t for t in await guild.active_threads()
                        if t.parent_id not in excluded and not (t.parent and t.parent.is_nsfw())]
        except discord.HTTPException:
            pass
        started = time.monotonic()
        total = len(await self.voices.collected(guild.id, member.id))
        last_update = 0.0
        for index, channel in enumerate(sources):
            before_id, finished = await self.voices.cursor(guild.id, member.id, channel.id)
            while not finished and total < MAX_COLLECTED and time.monotonic() - started < MAX_COLLECT_SECONDS:
                before = discord.Object(before_id) if before_id else None
                page = [m async for m in channel.history(limit=HISTORY_PAGE, before=before)]
                mine = [(m.id, clean_text(m.clean_content)) for m in page
                        if m.author.id == member.id and not m.author.bot and m.type == discord.MessageType.default
                        and m.content and not m.content.startswith(COMMAND_PREFIXES)]
                mine = [(i, t) for i, t in mine if t]
                finished = len(page) < HISTORY_PAGE
                before_id = page[-1].id if page else before_id
                await self.voices.save_page(guild.id, member.id, channel.id, mine, before_id, finished)
                total += len(mine)
                if time.monotonic() - last_update > 3:
                    last_update = time.monotonic()
                    await interaction.edit_original_response(
                        content=f"Reading history: channel {index + 1}/{len(sources)}, {total} messages found...")
                await asyncio.sleep(0)
        return await self.voices.collected(guild.id, member.id)

    async def excluded_channels(self, guild_id: int) -> set[int]:
        async with self.core.registry.db.execute(
            "SELECT channel_id FROM guild_excluded_channels WHERE guild_id = ?", (guild_id,)
        ) as cur:
            return {row[0] for row in await cur.fetchall()}

    # -- who asked ----------------------------------------------------------------------------------

    async def lookup(self, interaction: discord.Interaction, message: discord.Message) -> None:
        post = await GuildData(self.core.registry).post(interaction.guild_id, message.id)
        if post is None:
            await interaction.response.send_message("I did not generate that message.", ephemeral=True)
            return
        who = f"requested by <@{post['requested_by']}>" if post["requested_by"] else \
            f"posted by schedule #{post['schedule_id']}"
        await interaction.response.send_message(
            f"Generated by the persona `@{post['handle']}`, {who}, <t:{int(post['created_at'])}:f>. "
            "It is machine-written, not the real person.", ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot) -> None:
    await bot.add_cog(VoiceCog(bot))
