"""Posting generated text as the persona: through a channel webhook (name + avatar, like
PluralKit) when the bot may manage webhooks, else as the bot's own tweet-like embed.

One webhook per channel is created and reused (Discord allows 10 per channel). Every persona
post is labelled as generated: the webhook name carries a "(bot)" suffix and the embed a footer.
"""

from __future__ import annotations

import logging

import discord

from bot.core.storage import ModelRecord
from bot.discord.discord_limits import fit_content, safe_url, webhook_username
from bot.discord.ui import NO_PINGS, tweet_embed

log = logging.getLogger(__name__)

WEBHOOK_NAME = "tweetalike"
WEBHOOKS_PER_CHANNEL = 10
NAME_SUFFIX = " (bot)"


def persona_name(display_name: str) -> str:
    """A webhook username Discord accepts (see bot/discord/discord_limits.py), labelled as a bot."""
    return webhook_username(display_name, NAME_SUFFIX)


class PersonaPoster:
    def __init__(self, bot):
        self.bot = bot

    @property
    def core(self):
        return self.bot.core

    async def post(
        self,
        channel: discord.abc.Messageable,
        model: ModelRecord,
        text: str,
        *,
        as_webhook: bool,
        nonce: str | None = None,
        reply_to: discord.Message | None = None,
    ) -> discord.Message:
        """Send one generated post; raises discord.Forbidden / NotFound when the channel is unusable.

        `reply_to`: an embed post is a Discord reply to that message (without pinging its author);
        a webhook cannot reply (Discord's execute-webhook has no message reference), so a webhook
        post is a plain post, which "Who made this?" links to the message it answered.
        """
        if (
            as_webhook
            and isinstance(channel, discord.TextChannel)
            and channel.permissions_for(channel.guild.me).manage_webhooks
        ):
            webhook = await self.webhook_for(channel)
            if webhook is not None:
                try:
                    return await self._send_webhook(webhook, model, text)
                except discord.NotFound:  # someone deleted our webhook: make a new one once
                    await self.core.posts.forget_webhook(channel.id)
                    webhook = await self.webhook_for(channel)
                    if webhook is not None:
                        return await self._send_webhook(webhook, model, text)
        reference = reply_to.to_reference(fail_if_not_exists=False) if reply_to is not None else None
        return await channel.send(
            embed=tweet_embed(model, text), nonce=nonce, allowed_mentions=NO_PINGS, reference=reference
        )

    async def _send_webhook(
        self, webhook: discord.Webhook, model: ModelRecord, text: str
    ) -> discord.WebhookMessage:
        return await webhook.send(
            content=fit_content(text),
            username=persona_name(model.display_name),
            avatar_url=safe_url(model.avatar_url),
            allowed_mentions=NO_PINGS,
            wait=True,
        )

    async def webhook_for(self, channel: discord.TextChannel) -> discord.Webhook | None:
        """Our webhook in this channel: remembered, found, or created; None if the channel is full."""
        saved = await self.core.posts.webhook(channel.id)
        if saved is not None:
            return discord.Webhook.partial(saved[0], saved[1], client=self.bot)
        try:
            existing = await channel.webhooks()
        except discord.Forbidden:
            return None
        mine = [w for w in existing if w.user and w.user.id == self.bot.user.id and w.token]
        if mine:
            webhook = mine[0]
        elif len(existing) >= WEBHOOKS_PER_CHANNEL:
            log.info(
                "Channel %s already has %d webhooks; posting as the bot instead", channel.id, len(existing)
            )
            return None
        else:
            webhook = await channel.create_webhook(name=WEBHOOK_NAME, reason="tweetalike persona posts")
        await self.core.posts.save_webhook(channel.guild.id, channel.id, webhook.id, webhook.token)
        return webhook
