"""/chatter and the message listener: personas answer replies to their posts, mentions, and chime in.

The decision (who answers, the limits, the claim that answers a message once) is the core's
(`core.chatter`); this cog turns a discord.Message into what the core needs and posts the answer
through the same path as every other persona post (bot/discord/posting.py): webhook or embed, labelled,
no pings. The message's text is read only to prompt that one answer; it is never stored or logged.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.conversation import Answer, Incoming
from bot.core.errors import UserError
from bot.discord.discord_limits import fit_embed
from bot.discord.options import Duration, Handle
from bot.discord.posting import PersonaPoster, persona_name
from bot.discord.ui import GENERATED_LABEL, handle_autocomplete
from bot.discord.ui import format_duration as duration_text

log = logging.getLogger(__name__)

ANSWERABLE_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class ChatterCog(commands.Cog):
    chatter = app_commands.Group(
        name="chatter",
        description="Let personas take part in conversations",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.poster = PersonaPoster(bot)

    # -- commands -----------------------------------------------------------------------------

    @chatter.command(name="set", description="Let a persona chime in in a channel on its own")
    @app_commands.describe(
        channel="Where it may chime in",
        handle="Which persona",
        rate="Chance to answer each message, 0 to 1 (default: a small one)",
        cooldown="Least time between two chime-ins in the channel, e.g. 5m",
        personas="Also answer other personas' posts (a few per hour at most)",
    )
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def set_(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        handle: Handle,
        rate: app_commands.Range[float, 0.0, 1.0] | None = None,
        cooldown: Duration | None = None,
        personas: bool = False,
    ) -> None:
        if channel.guild.id != interaction.guild_id:
            raise UserError("That channel is not in this server.")
        model, setting = await self.core.chatter.set(
            guild_id=interaction.guild_id,
            channel_id=channel.id,
            handle=handle,
            rate=rate,
            cooldown_s=cooldown,
            allow_personas=personas,
            updated_by=interaction.user.id,
        )
        await interaction.response.send_message(
            f"**{model.display_name}** now chimes in in {channel.mention}: {describe(setting)}. "
            "It also answers replies to its posts and mentions (`@bot "
            f"{model.handle} ...`) anywhere.",
            ephemeral=True,
        )

    @chatter.command(name="list", description="Where personas chime in")
    async def list_(self, interaction: discord.Interaction) -> None:
        settings = await self.core.chatter.list(interaction.guild_id)
        if not settings:
            await interaction.response.send_message(
                "No persona chimes in here. Add one with `/chatter set`.", ephemeral=True
            )
            return
        lines = [f"`@{s.handle}` in <#{s.channel_id}>: {describe(s)}" for s in settings]
        embed = discord.Embed(title="Chatter", description="\n".join(lines))
        await interaction.response.send_message(embed=fit_embed(embed), ephemeral=True)

    @chatter.command(name="off", description="Stop personas chiming in (in a channel, or everywhere)")
    @app_commands.describe(channel="Only in this channel", handle="Only this persona")
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def off(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        handle: Handle | None = None,
    ) -> None:
        removed = await self.core.chatter.off(interaction.guild_id, channel.id if channel else None, handle)
        where = f" in {channel.mention}" if channel else ""
        await interaction.response.send_message(
            f"Stopped {removed} chatter setting{'s' if removed != 1 else ''}{where}."
            if removed
            else f"No persona was chiming in{where}.",
            ephemeral=True,
        )

    # -- the listener -------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None or self.bot.user is None:
            return
        try:
            incoming = await self.incoming(message)
            answer = await self.core.chatter.decide(incoming) if incoming else None
            if answer is not None:
                await self.answer(message, answer)
        except Exception:  # one message must not break the listener; the text is not logged
            log.exception("Could not answer message %s in channel %s", message.id, message.channel.id)

    async def incoming(self, message: discord.Message) -> Incoming | None:
        """What the core needs to know about a message; None where the bot could not answer anyway."""
        if not self.may_post(message.channel):
            return None
        persona_post, other_bot, writer = False, message.author.bot, None
        if message.webhook_id is not None:
            saved = await self.core.posts.webhook(message.channel.id)
            persona_post = saved is not None and saved[0] == message.webhook_id
            writer = await self.webhook_writer(message) if persona_post else None
        elif message.author.id == self.bot.user.id:
            embed = message.embeds[0] if message.embeds else None
            persona_post = bool(embed and embed.footer.text == GENERATED_LABEL)
            author = embed.author.name if embed and embed.author.name else ""
            writer = author.rsplit("(@", 1)[-1].rstrip(")") if persona_post and "(@" in author else None
        return Incoming(
            guild_id=message.guild.id,
            channel_id=message.channel.id,
            message_id=message.id,
            author_id=message.author.id,
            author_name=message.author.name,
            text=message.content or "",
            system=message.type not in ANSWERABLE_TYPES,
            other_bot=other_bot and not persona_post,
            persona_post=persona_post,
            writer=writer,
            mentions_bot=any(u.id == self.bot.user.id for u in message.mentions),
            reply_to=message.reference.message_id if message.reference else None,
        )

    async def webhook_writer(self, message: discord.Message) -> str | None:
        """Which persona a post of our webhook came from, by the name it was posted under."""
        for model in await self.core.list_models(message.guild.id):
            if persona_name(model.display_name) == message.author.name:
                return model.handle
        return None

    def may_post(self, channel) -> bool:
        if not isinstance(channel, (discord.TextChannel, discord.Thread)):
            return False
        perms = channel.permissions_for(channel.guild.me)
        return (perms.send_messages and perms.embed_links) or (
            perms.manage_webhooks and isinstance(channel, discord.TextChannel)
        )

    async def answer(self, message: discord.Message, answer: Answer) -> None:
        """Write the claimed answer (in the generation thread) and post it like any persona post."""
        text = await self.core.chatter.write(answer)
        if not text:
            return  # nothing usable this time; the message stays claimed (answered at most once)
        as_webhook = await self.core.posts.persona_webhooks(message.guild.id)
        try:
            sent = await self.poster.post(
                message.channel, answer.model, text, as_webhook=as_webhook, reply_to=message
            )
        except discord.HTTPException as exc:
            log.warning("Chatter answer in channel %s refused: %s", message.channel.id, exc.status)
            return
        await self.core.posts.record_post(
            message_id=sent.id,
            guild_id=message.guild.id,
            channel_id=message.channel.id,
            handle=answer.model.handle,
            requested_by=message.author.id if answer.kind != "chime" and not message.author.bot else None,
            answered_message_id=message.id,
        )
        log.info("Persona %s answered a %s in guild %s", answer.model.handle, answer.kind, message.guild.id)


def describe(setting) -> str:
    chance = f"{setting.rate:.0%}" if setting.rate >= 0.01 or setting.rate == 0 else f"{setting.rate:.2%}"
    gap = f"at least {duration_text(setting.cooldown_s)} apart" if setting.cooldown_s else "no gap"
    personas = ", answers other personas" if setting.allow_personas else ""
    return f"{chance} of messages, {gap}{personas}"


async def setup(bot) -> None:
    await bot.add_cog(ChatterCog(bot))
