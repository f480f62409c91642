"""/autopost: a persona posts on its own, on an interval or at fixed times of day."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.core.errors import UserError
from bot.core.limits import MAX_SCHEDULE_FAILURES
from bot.core.storage import Schedule
from bot.discord.discord_limits import fit_content, fit_embed
from bot.discord.options import Duration, Handle, Interval
from bot.discord.posting import PersonaPoster
from bot.discord.ui import NO_PINGS, handle_autocomplete

log = logging.getLogger(__name__)

RECENT_HISTORY = 20  # messages checked for an already-sent webhook post after a crash
TICK_STOP_TIMEOUT = 15.0  # at shutdown, how long a tick at work may take to send its claimed posts


class AutopostCog(commands.Cog):
    autopost = app_commands.Group(
        name="autopost",
        description="Let a persona post on its own",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.poster = PersonaPoster(bot)
        self._ticking = False

    async def cog_load(self) -> None:
        self.tick.change_interval(seconds=self.bot.settings.schedule_tick_seconds)
        self.tick.start()

    async def cog_unload(self) -> None:
        """A tick at work finishes (its claimed posts sent, its queries done) before the core closes
        the database; a sleeping one ends at once. A tick cancelled mid-query left its connection
        half-closed, and the process could not leave its event loop (see bot/runtime/shutdown.py)."""
        ticking = self.tick.get_task()
        self.tick.stop()  # no new iteration
        if not self._ticking:
            self.tick.cancel()
        if ticking is None:
            return
        done, _ = await asyncio.wait({ticking}, timeout=TICK_STOP_TIMEOUT)
        if not done:  # e.g. Discord does not answer a post: give up on it as a crash would
            self.tick.cancel()
            await asyncio.wait({ticking}, timeout=5)

    # -- commands -----------------------------------------------------------------------------

    @autopost.command(name="add", description="Post as a persona on a schedule")
    @app_commands.describe(
        handle="Which persona",
        channel="Where to post",
        every="Interval: 30m, 2h, 1d ... (5 minutes to 7 days)",
        jitter="Random spread around each post, e.g. 10m",
        prompt="Start of every post (optional)",
        daily_at="Instead of an interval: times of day, e.g. 09:00, 18:30",
        timezone="Time zone for daily_at, e.g. Europe/Paris (default UTC)",
    )
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def add(
        self,
        interaction: discord.Interaction,
        handle: Handle,
        channel: discord.TextChannel,
        every: Interval | None = None,
        jitter: Duration | None = None,
        prompt: str | None = None,
        daily_at: str | None = None,
        timezone: str | None = None,
    ) -> None:
        if channel.guild.id != interaction.guild_id:
            raise UserError("That channel is not in this server.")
        model, schedule = await self.core.schedules.add(
            guild_id=interaction.guild_id,
            handle=handle,
            channel_id=channel.id,
            every=every,
            jitter=jitter,
            prompt=prompt or "",
            daily_at=daily_at,
            timezone=timezone,
            created_by=interaction.user.id,
        )
        await interaction.response.send_message(
            f"Schedule #{schedule.id}: **{model.display_name}** posts in {channel.mention} "
            f"{schedule.describe()}, "
            f"next <t:{int(schedule.next_run_at)}:R>.",
            ephemeral=True,
        )

    @autopost.command(name="list", description="This server's schedules")
    async def list_(self, interaction: discord.Interaction) -> None:
        schedules = await self.core.schedules.list(interaction.guild_id)
        if not schedules:
            await interaction.response.send_message(
                "No schedules. Add one with `/autopost add`.", ephemeral=True
            )
            return
        lines = []
        for s in schedules:
            state = (
                f"⏸️ paused ({s.pause_reason})"
                if s.paused and s.pause_reason
                else "⏸️ paused"
                if s.paused
                else f"next <t:{int(s.next_run_at)}:R>"
            )
            lines.append(f"**#{s.id}** `@{s.handle}` in <#{s.channel_id}> {s.describe()} · {state}")
        embed = discord.Embed(title="Schedules", description="\n".join(lines))
        await interaction.response.send_message(embed=fit_embed(embed), ephemeral=True)

    @autopost.command(name="pause", description="Pause a schedule")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def pause(self, interaction: discord.Interaction, id: int) -> None:
        await self.core.schedules.pause(interaction.guild_id, id)
        await interaction.response.send_message(f"Schedule #{id} is paused.", ephemeral=True)

    @autopost.command(name="resume", description="Resume a paused schedule")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def resume(self, interaction: discord.Interaction, id: int) -> None:
        schedule = await self.core.schedules.resume(interaction.guild_id, id)
        await interaction.response.send_message(
            f"Schedule #{id} resumed; next post <t:{int(schedule.next_run_at)}:R>.", ephemeral=True
        )

    @autopost.command(name="remove", description="Delete a schedule")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def remove(self, interaction: discord.Interaction, id: int) -> None:
        await self.core.schedules.remove(interaction.guild_id, id)
        await interaction.response.send_message(f"Schedule #{id} is removed.", ephemeral=True)

    # -- the loop -----------------------------------------------------------------------------

    @tasks.loop(seconds=30)
    async def tick(self) -> None:
        self._ticking = True  # the cog's unload lets a tick at work finish
        try:
            await self.post_due()
        finally:
            self._ticking = False

    async def post_due(self) -> None:
        # Only this process's guilds (its shards), each post claimed so no other process sends it too.
        try:
            due = await self.core.schedules.claim_due(self.bot.guild_shards())
        except Exception as exc:  # the database restarts or the network drops: the next tick retries
            log.warning(
                "Could not read the due schedules (%s); trying again at the next tick", exc.__class__.__name__
            )
            return
        for schedule in due:
            try:
                await self.run_schedule(schedule)
            except Exception as exc:  # one broken schedule must not stop the others
                log.exception("Schedule %s failed", schedule.id)
                await self.count_failure(schedule, exc)

    @tick.before_loop
    async def before_tick(self) -> None:
        await self.bot.wait_until_ready()

    async def run_schedule(self, schedule: Schedule) -> None:
        model = await self.core.find_model(schedule.guild_id, schedule.handle)
        if model is None or model.status != "ready":
            await self.pause_and_tell(schedule, f"the persona `@{schedule.handle}` no longer exists")
            return
        channel = self.bot.get_channel(schedule.channel_id)
        if not isinstance(channel, discord.TextChannel) or channel.guild.id != schedule.guild_id:
            await self.pause_and_tell(schedule, "its channel was deleted or I cannot see it")
            return
        perms = channel.permissions_for(channel.guild.me)
        if not (perms.send_messages and perms.embed_links) and not perms.manage_webhooks:
            await self.pause_and_tell(schedule, f"I lost the permission to post in {channel.mention}")
            return
        as_webhook = await self.core.posts.persona_webhooks(schedule.guild_id)
        retrying = schedule.pending_nonce is not None
        nonce = await self.core.schedules.begin_post(schedule)
        if retrying and as_webhook and await self.already_posted(channel, schedule):
            await self.core.schedules.finish_post(schedule)
            return
        _, texts = await self.core.generate(schedule.guild_id, schedule.handle, schedule.prompt, 1)
        if not texts:
            await self.core.schedules.postpone(schedule)  # nothing usable: the next window tries again
            return
        try:
            message = await self.poster.post(channel, model, texts[0], as_webhook=as_webhook, nonce=nonce)
        except discord.Forbidden:
            await self.pause_and_tell(schedule, f"I lost the permission to post in {channel.mention}")
            return
        except discord.NotFound:
            await self.pause_and_tell(schedule, "its channel was deleted")
            return
        except (discord.HTTPException, discord.RateLimited) as exc:
            if isinstance(exc, discord.HTTPException) and exc.status != 429 and exc.status < 500:
                raise  # a refusal: counted by the loop
            # discord.py already retried 429 (after Retry-After) and 5xx (with backoff): Discord is
            # busy, not refusing this post. Try the next window without counting a failure.
            log.warning("Schedule %s: Discord is busy (%s); trying again next window", schedule.id, exc)
            await self.core.schedules.postpone(schedule)
            return
        await self.core.posts.record_post(
            message_id=message.id,
            guild_id=schedule.guild_id,
            channel_id=channel.id,
            handle=schedule.handle,
            schedule_id=schedule.id,
        )
        await self.core.schedules.finish_post(schedule)
        log.info("Schedule %s posted in guild %s", schedule.id, schedule.guild_id)

    async def already_posted(self, channel: discord.TextChannel, schedule: Schedule) -> bool:
        """After a crash mid-post: did our webhook's message go out before we could record it?"""
        saved = await self.core.posts.webhook(channel.id)
        if saved is None:
            return False
        try:
            async for message in channel.history(limit=RECENT_HISTORY):
                if (
                    message.webhook_id == saved[0]
                    and message.created_at.timestamp() >= (schedule.pending_since or 0) - 1
                ):
                    return True
        except discord.HTTPException:
            return False
        return False

    async def count_failure(self, schedule: Schedule, error: Exception) -> None:
        """A refused post waits for the next window; MAX_SCHEDULE_FAILURES in a row pause the schedule."""
        try:
            failures = await self.core.schedules.record_failure(schedule)
            if failures >= MAX_SCHEDULE_FAILURES:
                reason = f"its last {failures} posts failed ({describe_failure(error)})"
                await self.pause_and_tell(schedule, reason)
        except Exception:
            log.exception("Could not record the failure of schedule %s", schedule.id)

    async def pause_and_tell(self, schedule: Schedule, reason: str) -> None:
        """Pause instead of failing forever, and tell the guild once (paused schedules never run)."""
        await self.core.schedules.pause(schedule.guild_id, schedule.id, reason)
        log.info("Paused schedule %s: %s", schedule.id, reason)
        guild = self.bot.get_guild(schedule.guild_id)
        candidates = [self.bot.get_channel(schedule.channel_id), guild.system_channel if guild else None]
        text = (
            f"Schedule #{schedule.id} (`@{schedule.handle}`) is paused: {reason}. "
            "Fix it, then `/autopost resume`, or `/autopost remove` it."
        )
        for channel in candidates:
            if (
                isinstance(channel, discord.TextChannel)
                and channel.permissions_for(channel.guild.me).send_messages
            ):
                try:
                    await channel.send(fit_content(text), allowed_mentions=NO_PINGS)
                    return
                except discord.HTTPException:
                    continue


def describe_failure(error: Exception) -> str:
    if isinstance(error, discord.HTTPException):
        detail = f": {error.text[:150]}" if error.text else ""
        return f"Discord answered {error.status}{detail}"
    if isinstance(error, UserError):
        return str(error)[:150]
    return "an error on my side, which was logged"


async def setup(bot) -> None:
    await bot.add_cog(AutopostCog(bot))
