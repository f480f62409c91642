"""/voice: a member's persona of themselves, from their own Discord data package; their data
and its erasure; "Who made this?" lookups.

The bot never reads members' messages to train (Discord's Developer Policy; core/personas/voices.py).
"""

from __future__ import annotations

import contextlib
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.errors import UserError
from bot.core.handles import normalize_handle
from bot.discord.options import Handle
from bot.discord.ui import NO_PINGS, defer_public, exactly_one_source, showing_download, upload_limit

log = logging.getLogger(__name__)


class VoiceCog(commands.Cog):
    voice = app_commands.Group(
        name="voice", description="Your own voice: a persona of you, and your data", guild_only=True
    )

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.who_made_this = app_commands.ContextMenu(name="Who made this?", callback=self.lookup)
        self.who_made_this.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.who_made_this)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.who_made_this.name, type=self.who_made_this.type)

    # -- a persona of yourself ----------------------------------------------------------------------

    @voice.command(name="train", description="Train a persona of yourself on your own Discord data package")
    @app_commands.describe(
        file="Your Discord data package (.zip), or its Messages folder zipped",
        url="Or the package's download link (from Discord's email), or another http(s) link to it",
        handle="Name of the persona (default: your user name)",
        this_server_only="Use only your messages in this server's channels (default: every server's)",
    )
    async def train_me(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2048] | None = None,
        handle: Handle | None = None,
        this_server_only: bool = False,
    ) -> None:
        member = interaction.user
        source = exactly_one_source(file, url, "your data package")
        if file is not None:
            self.check_size(interaction, file)
        handle = await self.core.voices.check_can_train(
            interaction.guild_id, member.id, handle or normalize_handle(member.name.replace(".", "_"))
        )
        await defer_public(interaction)
        async with contextlib.AsyncExitStack() as stack:
            transfer = None
            if isinstance(source, str):  # the package by link: the reply shows the download
                every = self.bot.settings.progress_edit_seconds
                transfer = await stack.enter_async_context(showing_download(interaction, source, every))
            queued = await self.core.voices.train_from_package(
                guild_id=interaction.guild_id,
                member_id=member.id,
                handle=handle,
                data=await file.read() if file is not None else None,
                filename=file.filename if file is not None else "",
                url=source if isinstance(source, str) else None,
                transfer=transfer,
                display_name=getattr(member, "display_name", member.name),
                avatar_url=member.display_avatar.url,
                channel_id=interaction.channel_id,
                this_server_only=this_server_only,
            )
        await self.bot.get_cog("TrainingCog").show_queued(interaction, queued.job, queued.result.warnings)

    def check_size(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        limit = self.bot.settings.max_attachment_bytes
        if file.size > limit:
            raise UserError(
                f"`{file.filename[:80]}` is {file.size / 2**20:.1f} MB; I read uploads up to "
                f"{limit / 2**20:.0f} MB. Zip only the package's Messages folder and send that, if it fits "
                f"in {upload_limit(interaction, self.bot.settings) / 2**20:.0f} MB; or give the package's "
                "download link (from Discord's email) as `url:`."
            )

    # -- your data ------------------------------------------------------------------------------------

    @voice.command(name="mydata", description="Which personas in this server were trained on your data")
    async def mydata(self, interaction: discord.Interaction) -> None:
        personas = await self.core.voices.personas_using(interaction.user.id, interaction.guild_id)
        pending = await self.core.voices.pending_trainings(interaction.user.id, interaction.guild_id)
        names = ", ".join(f"`@{h}`" for _, h in personas) or "none"
        await interaction.response.send_message(
            f"Personas here trained on your data: {names}; trainings of yours waiting or running: "
            f"{len(pending)}. I never read your messages to train: a persona of you comes only from the "
            "data package you upload (`/voice train`), which is read in memory and not kept; its text "
            "stays only inside the persona. `/voice delete` erases them here, `/voice optout` everywhere.",
            ephemeral=True,
        )

    @voice.command(name="delete", description="Erase the personas trained on your data, in this server")
    async def delete(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.core.voices.erase(interaction.user.id, interaction.guild_id)
        await interaction.followup.send(self.describe_erasure("Done.", report), ephemeral=True)

    @voice.command(name="optout", description="Erase every persona trained on your data, in every server")
    async def optout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.core.voices.opt_out(interaction.user.id)
        await interaction.followup.send(self.describe_erasure("You opted out.", report), ephemeral=True)

    @staticmethod
    def describe_erasure(head: str, report) -> str:
        personas = ", ".join(f"`@{h}`" for _, h in report.personas) or "none"
        return (
            f"{head} Deleted personas: {personas}; schedules removed: {report.schedules}; "
            f"trainings cancelled: {report.jobs_cancelled}."
        )

    # -- who asked ----------------------------------------------------------------------------------

    async def lookup(self, interaction: discord.Interaction, message: discord.Message) -> None:
        post = await self.core.posts.post(interaction.guild_id, message.id)
        if post is None:
            await interaction.response.send_message("I did not generate that message.", ephemeral=True)
            return
        if post.requested_by:
            who = f"requested by <@{post.requested_by}>"
        elif post.schedule_id:
            who = f"posted by schedule #{post.schedule_id}"
        else:
            who = "chiming in on its own (`/chatter`)"
        if post.answered_message_id:
            link = f"https://discord.com/channels/{interaction.guild_id}/{post.channel_id}/{post.answered_message_id}"
            who += f", answering {link}"
        await interaction.response.send_message(
            f"Generated by the persona `@{post.handle}`, {who}, <t:{int(post.created_at)}:f>. "
            "It is machine-written, not the real person.",
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )


async def setup(bot) -> None:
    await bot.add_cog(VoiceCog(bot))
