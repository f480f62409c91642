"""/voice: members choose whether the bot may learn their voice; "Who made this?" lookups."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from ..history import MESSAGE_CONTENT_HELP, MemberTrainer
from ..ui import NO_PINGS

log = logging.getLogger(__name__)


class VoiceCog(commands.Cog):
    voice = app_commands.Group(
        name="voice", description="Your own voice: consent and your data", guild_only=True
    )

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.member_trainer = MemberTrainer(bot)
        self.who_made_this = app_commands.ContextMenu(name="Who made this?", callback=self.lookup)
        self.who_made_this.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.who_made_this)
        if not self.bot.intents.message_content:
            log.warning(
                "Message Content intent is off: /train member and /voice train cannot read history. %s",
                MESSAGE_CONTENT_HELP,
            )

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.who_made_this.name, type=self.who_made_this.type)

    # -- consent ----------------------------------------------------------------------------------

    @voice.command(name="optin", description="Allow personas to be trained on your messages in this server")
    async def optin(self, interaction: discord.Interaction) -> None:
        await self.core.set_consent(interaction.user.id, True)
        await interaction.response.send_message(
            "You opted in: moderators can train a persona on your messages here (`/train member`), and you "
            "can train your own with `/voice train`. `/voice optout` undoes it everywhere.",
            ephemeral=True,
        )

    @voice.command(
        name="optout", description="Withdraw consent: delete every persona trained on your messages"
    )
    async def optout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.core.opt_out(interaction.user.id)
        await interaction.followup.send(self.describe_erasure("You opted out.", report), ephemeral=True)

    @voice.command(name="mydata", description="Which personas in this server used your messages")
    async def mydata(self, interaction: discord.Interaction) -> None:
        personas = await self.core.personas_using(interaction.user.id, interaction.guild_id)
        collected = await self.core.collected_messages(interaction.guild_id, interaction.user.id)
        consent = "opted in" if await self.core.opted_in(interaction.user.id) else "not opted in"
        names = ", ".join(f"`@{h}`" for _, h in personas) or "none"
        await interaction.response.send_message(
            f"You are {consent}. Personas here trained on your messages: {names}. "
            f"Messages of yours I keep for training here: {len(collected)}.",
            ephemeral=True,
        )

    @voice.command(
        name="delete", description="Erase your collected messages and personas trained on them, here"
    )
    async def delete(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.core.erase_voice(interaction.user.id, interaction.guild_id)
        await interaction.followup.send(self.describe_erasure("Done.", report), ephemeral=True)

    @staticmethod
    def describe_erasure(head: str, report) -> str:
        personas = ", ".join(f"`@{h}`" for _, h in report.personas) or "none"
        return (
            f"{head} Deleted personas: {personas}; schedules removed: {report.schedules}; "
            f"trainings cancelled: {report.jobs_cancelled}; collected messages deleted: {report.messages}."
        )

    # -- training on a member's messages ------------------------------------------------------------

    @voice.command(name="train", description="Train a persona on your own messages in this server")
    async def train_me(self, interaction: discord.Interaction) -> None:
        await self.member_trainer.train(interaction, interaction.user, requested_by=interaction.user.id)

    # -- who asked ----------------------------------------------------------------------------------

    async def lookup(self, interaction: discord.Interaction, message: discord.Message) -> None:
        post = await self.core.find_post(interaction.guild_id, message.id)
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
