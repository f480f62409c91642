"""/impersonate: write new posts in a trained persona's voice."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.errors import UserError
from bot.core.limits import MAX_PROMPT_CHARS, MAX_TWEETS_PER_REQUEST
from bot.discord.discord_limits import embed_messages, fit_content
from bot.discord.options import Handle
from bot.discord.posting import PersonaPoster
from bot.discord.ui import NO_PINGS, defer_public, handle_autocomplete, tweet_embed


def impersonate_cooldown(interaction: discord.Interaction) -> app_commands.Cooldown | None:
    seconds = interaction.client.settings.impersonate_cooldown_seconds
    return app_commands.Cooldown(1, seconds) if seconds > 0 else None


def spend_guild_budget(interaction: discord.Interaction) -> bool:
    """A whole server shares a budget too, so one busy server cannot starve the others; persona
    answers in the conversation (/chatter) take from the same budget (core/conversation/chatter.py)."""
    chatter = interaction.client.core.chatter
    now = chatter.clock()
    if chatter.guild_budget.take(interaction.guild_id, now):
        return True
    retry = chatter.guild_budget.retry_after(interaction.guild_id, now)
    raise app_commands.CommandOnCooldown(app_commands.Cooldown(chatter.guild_budget.count, 60), retry)


class ImpersonateCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.poster = PersonaPoster(bot)

    @app_commands.command(name="impersonate", description="Write new posts in someone's voice")
    @app_commands.describe(
        handle="Which persona (this server's models)",
        prompt="Start of the post (optional)",
        count="How many posts (1-10, default 5)",
    )
    @app_commands.guild_only()
    # Checks run bottom-up: the per-user cooldown first, so a refused user does not spend the
    # server's budget.
    @app_commands.check(spend_guild_budget)
    @app_commands.checks.dynamic_cooldown(impersonate_cooldown, key=lambda i: (i.guild_id, i.user.id))
    @app_commands.autocomplete(handle=handle_autocomplete)
    async def impersonate(
        self,
        interaction: discord.Interaction,
        handle: Handle,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
        count: app_commands.Range[int, 1, MAX_TWEETS_PER_REQUEST] | None = 5,
    ) -> None:
        # Checked before answering, so a typo gets an ephemeral answer instead of a public "thinking...".
        count = 5 if count is None else count
        model, prompt = await self.core.check_generation(interaction.guild_id, handle, prompt, count)
        channel = interaction.channel
        if await self.core.posts.persona_webhooks(interaction.guild_id) and isinstance(
            channel, discord.TextChannel
        ):
            await self.post_as_persona(interaction, channel, model, prompt, count)
            return
        await defer_public(interaction)
        tweets = await self.core.write_posts(model, prompt, count)
        if not tweets:
            raise UserError("The model had nothing to say this time; try again.")
        interaction.extras["answered"] = True
        # Ten long posts can pass the 6,000 characters a message may hold: the rest follow.
        first, *rest = embed_messages(tweet_embed(model, text) for text in tweets)
        messages = [await interaction.edit_original_response(embeds=first, allowed_mentions=NO_PINGS)]
        for embeds in rest:  # in order, one after the other
            messages.append(  # noqa: PERF401
                await interaction.followup.send(embeds=embeds, allowed_mentions=NO_PINGS, wait=True)
            )
        for message in messages:
            await self.core.posts.record_post(
                message_id=message.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                handle=model.handle,
                requested_by=interaction.user.id,
            )

    async def post_as_persona(self, interaction, channel, model, prompt: str, count: int) -> None:
        """Webhook posts with the persona's name and avatar; the reply itself stays private."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        tweets = await self.core.write_posts(model, prompt, count)
        for text in tweets:
            message = await self.poster.post(channel, model, text, as_webhook=True)
            await self.core.posts.record_post(
                message_id=message.id,
                guild_id=interaction.guild_id,
                channel_id=channel.id,
                handle=model.handle,
                requested_by=interaction.user.id,
            )
        await interaction.followup.send(
            fit_content(f"Posted {len(tweets)} as **{model.display_name}**."),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )


async def setup(bot) -> None:
    await bot.add_cog(ImpersonateCog(bot))
