"""/train: upload someone's posts, watch the fine-tuning, get told when it is done."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.errors import UserError
from bot.core.ingest import PACKAGE_FORMAT, UnsupportedFile, combine_people, ingest
from bot.core.limits import MAX_EPOCHS
from bot.core.storage import JobRecord
from bot.core.training import JobOutcome, TrainProgress, continued_line, queued_line
from bot.discord.discord_limits import fit_choices, fit_content, fit_embed
from bot.discord.options import AvatarUrl, Handle
from bot.discord.ui import (
    INTERACTION_EDIT_WINDOW,
    NO_PINGS,
    defer_public,
    exactly_one_source,
    format_duration,
    handle_autocomplete,
    interaction_age,
    number,
    progress_text,
    showing_download,
    stats_table,
    token_expired,
    upload_limit,
    voice_text,
)

log = logging.getLogger(__name__)

# A member's data package holds their own messages: only they may train on it (/voice train).
PACKAGE_IS_PERSONAL = (
    "That is a Discord data package: only the member it belongs to can train a persona on it, "
    "with `/voice train file:`."
)


def upload_advice(upload_limit: int) -> str:
    """What to do when a file cannot come as an upload: `upload_limit` is the most this user may
    upload here and the bot reads (the interaction's attachment_size_limit and MAX_ATTACHMENT_MB)."""
    return (
        f"Upload only data/tweets.js from the archive, gzipped (tweets.js.gz) or zipped on its own, if that "
        f"fits in {upload_limit / 2**20:.0f} MB; or put the whole archive (.zip) online and give its link "
        "as `url:`."
    )


@dataclass
class ProgressMessage:
    """Where a job's progress is shown: the /train reply, then a channel message once the token expires."""

    job: JobRecord
    interaction: discord.Interaction | None
    started: float = field(default_factory=time.monotonic)
    last_edit: float = 0.0
    message: discord.Message | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TrainingCog(commands.Cog):
    train = app_commands.Group(
        name="train",
        description="Teach the bot to write like someone",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core
        self.progress_messages: dict[int, ProgressMessage] = {}

    async def cog_load(self) -> None:
        recovered = self.core.trainings.recovered()
        if recovered:
            asyncio.create_task(self.announce_recovered(recovered))

    # -- commands -----------------------------------------------------------------------------

    @train.command(
        name="new", description="Fine-tune a model on a file of someone's posts (up to three people)"
    )
    @app_commands.describe(
        handle="Name of the persona, like a Twitter handle (letters, digits, _)",
        file="Twitter/X archive (.zip or tweets.js, may be .gz), CSV, JSON/JSONL or text, one post per line",
        url="Or a link to the file: a whole X archive .zip of any size, tweets.js, CSV or JSON (http/https)",
        display_name="Name shown on generated posts",
        avatar="Image URL shown on generated posts",
        method="LoRA adapters (default, small and fast) or full fine-tuning",
        epochs="Passes over the data (default 2 for LoRA on 1,000+ posts, else 4)",
        handle2="A second person, to mix both voices",
        file2="The second person's posts",
        handle3="A third person",
        file3="The third person's posts",
    )
    @app_commands.choices(
        method=[
            app_commands.Choice(name="LoRA adapters (small, fast)", value="lora"),
            app_commands.Choice(name="Full fine-tuning", value="full"),
        ]
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def train_new(
        self,
        interaction: discord.Interaction,
        handle: Handle,
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2048] | None = None,
        display_name: app_commands.Range[str, 1, 80] | None = None,
        avatar: AvatarUrl | None = None,
        method: app_commands.Choice[str] | None = None,
        epochs: app_commands.Range[int, 1, MAX_EPOCHS] | None = None,
        handle2: Handle | None = None,
        file2: discord.Attachment | None = None,
        handle3: Handle | None = None,
        file3: discord.Attachment | None = None,
    ) -> None:
        people = self.people_from(
            interaction, handle, exactly_one_source(file, url, "their posts"), handle2, file2, handle3, file3
        )
        combined = "-".join(h for h, _ in people)
        await self.core.trainings.check_can_queue(interaction.guild_id, combined)  # before the download
        await defer_public(interaction)
        results = []
        for person, source in people:
            try:
                results.append(await self.read_source(interaction, source))
            except UserError as exc:
                name = source if isinstance(source, str) else source.filename
                raise UserError(f"`{name[:80]}` ({person}): {exc}" if len(people) > 1 else str(exc)) from None
            if results[-1].format == PACKAGE_FORMAT:
                raise UserError(PACKAGE_IS_PERSONAL)
        tweets, stats = combine_people([h for h, _ in people], results)
        job = await self.core.trainings.submit(
            guild_id=interaction.guild_id,
            handle=combined,
            tweets=tweets,
            stats=stats,
            display_name=display_name or (" & ".join(h for h, _ in people) if len(people) > 1 else None),
            avatar_url=avatar,
            method=method.value if method else None,
            epochs=epochs,
            requested_by=interaction.user.id,
            channel_id=interaction.channel_id,
        )
        await self.show_queued(interaction, job, [w for result in results for w in result.warnings])

    @train.command(name="update", description="Continue a persona with new posts (it keeps what it learnt)")
    @app_commands.describe(
        handle="The persona to continue",
        file="New posts: an archive, tweets.js, CSV, JSON/JSONL or text (posts it has seen are skipped)",
        url="Or a link to the file (http/https)",
    )
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def train_update(
        self,
        interaction: discord.Interaction,
        handle: Handle,
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2048] | None = None,
    ) -> None:
        (_, source), *_ = self.people_from(
            interaction, handle, exactly_one_source(file, url, "the new posts")
        )
        model = await self.core.get_model(interaction.guild_id, handle)  # before the download
        await self.core.trainings.check_can_queue(interaction.guild_id, model.handle)
        await defer_public(interaction)
        result = await self.read_source(interaction, source)
        if result.format == PACKAGE_FORMAT:
            raise UserError(PACKAGE_IS_PERSONAL)
        job, plan = await self.core.trainings.update(
            guild_id=interaction.guild_id,
            handle=model.handle,
            tweets=result.tweets,
            stats=result.stats.as_dict(),
            requested_by=interaction.user.id,
            channel_id=interaction.channel_id,
        )
        await self.show_queued(interaction, job, result.warnings, intro=queued_line(plan, job.continues))

    async def show_queued(
        self, interaction: discord.Interaction, job: JobRecord, warnings: list[str], intro: str | None = None
    ) -> None:
        """The deferred reply becomes the job's progress message: the data table, then progress
        (also for /voice train, whose cog hands its jobs here)."""
        interaction.extras["answered"] = True
        watcher = self.progress_messages[job.id] = ProgressMessage(  # a download may have taken long
            job=job, interaction=interaction, started=time.monotonic() - interaction_age(interaction)
        )
        ahead = await self.core.trainings.ahead(job.id)
        note = "\n".join([intro] * bool(intro) + [f"⚠️ {w}" for w in warnings])
        queued = "starting now" if ahead == 0 else f"{ahead} job(s) ahead in the queue"
        async with watcher.lock:  # after a long download the interaction may have expired: show() knows
            await self.show(
                watcher,
                content=fit_content(note) or None,
                embed=self.progress_embed(job, None, f"Queued: {queued}."),
            )
        watcher.last_edit = time.monotonic()

    async def read_source(self, interaction: discord.Interaction, source: discord.Attachment | str):
        """One person's posts, cleaned: an upload read from Discord's CDN, or a link downloaded."""
        if isinstance(source, str):
            async with showing_download(
                interaction, source, self.bot.settings.progress_edit_seconds
            ) as transfer:
                return await self.core.downloads.read(source, ingest, transfer)
        data = await source.read()
        try:
            return await asyncio.to_thread(ingest, data, source.filename)
        except UnsupportedFile as exc:  # too big uncompressed, or a kind never read: say what works
            raise UserError(f"{exc} {upload_advice(upload_limit(interaction, self.bot.settings))}") from None

    def people_from(
        self, interaction: discord.Interaction, *pairs
    ) -> list[tuple[str, discord.Attachment | str]]:
        """(handle, upload or link) pairs from the options (handles normalized), checked before any
        download."""
        people = []
        limit = self.bot.settings.max_attachment_bytes
        for handle, attachment in zip(pairs[::2], pairs[1::2], strict=False):
            if handle is None and attachment is None:
                continue
            if handle is None or attachment is None:
                raise UserError(
                    "Each extra person needs both a handle and a file "
                    "(handle2 with file2, handle3 with file3)."
                )
            if "-" in handle:
                raise UserError("Give each person's handle separately (handle2, handle3), without `-`.")
            if isinstance(attachment, discord.Attachment) and attachment.size > limit:
                raise UserError(
                    f"`{attachment.filename[:80]}` is {attachment.size / 2**20:.1f} MB; I read uploads up to "
                    f"{limit / 2**20:.0f} MB. {upload_advice(upload_limit(interaction, self.bot.settings))}"
                )
            people.append((handle, attachment))
        if len({h for h, _ in people}) != len(people):
            raise UserError("The same handle appears twice.")
        return people

    @train.command(name="status", description="Show this server's training jobs")
    async def train_status(self, interaction: discord.Interaction) -> None:
        jobs = await self.core.trainings.list(interaction.guild_id, limit=10)
        if not jobs:
            await interaction.response.send_message("No training jobs in this server yet.", ephemeral=True)
            return
        lines = []
        for job in jobs:
            line = f"**#{job.id}** `{job.handle}` — {job.state}"
            if job.state == "running":
                live = self.core.trainings.progress(job.id)
                line += "\n" + progress_text(live)
            elif job.state == "queued":
                line += f" ({await self.core.trainings.ahead(job.id)} ahead)"
            elif job.error:
                line += f": {job.error}"
            lines.append(line)
        embed = discord.Embed(title="Training jobs", description="\n".join(lines))
        await interaction.response.send_message(embed=fit_embed(embed), ephemeral=True)

    @train.command(name="cancel", description="Cancel a queued or running training")
    @app_commands.describe(job="Job number, from /train status")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def train_cancel(self, interaction: discord.Interaction, job: int) -> None:
        state = await self.core.trainings.cancel(interaction.guild_id, job)
        text = (
            f"Job #{job} is cancelled."
            if state == "cancelled"
            else f"Job #{job} will stop after the current step."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @train_cancel.autocomplete("job")
    async def job_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[int]]:
        jobs = await self.core.trainings.list(interaction.guild_id, active_only=True)
        return fit_choices(
            app_commands.Choice(name=f"#{j.id} {j.handle} ({j.state})", value=j.id)
            for j in jobs
            if current in str(j.id) or current.lower() in j.handle
        )

    # -- progress and completion ----------------------------------------------------------------

    def progress_embed(
        self, job: JobRecord, progress: TrainProgress | None, status: str | None = None
    ) -> discord.Embed:
        embed = discord.Embed(
            title=f"Training {job.display_name} (@{job.handle})",
            description=status or progress_text(progress),
            colour=discord.Colour.blurple(),
        )
        embed.add_field(name="Data", value=f"```\n{stats_table(job.stats)}\n```", inline=False)
        embed.set_footer(text=f"Job #{job.id} · {job.method} · {job.epochs} epochs")
        return fit_embed(embed)

    @commands.Cog.listener()
    async def on_training_progress(self, job: JobRecord, progress: TrainProgress) -> None:
        watcher = self.progress_messages.get(job.id)
        if watcher is None or watcher.lock.locked():
            return
        if time.monotonic() - watcher.last_edit < self.bot.settings.progress_edit_seconds:
            return
        async with watcher.lock:
            watcher.last_edit = time.monotonic()
            await self.show(watcher, embed=self.progress_embed(job, progress))

    async def show(self, watcher: ProgressMessage, **fields) -> None:
        """Edit the progress message, moving to a channel message when the interaction expires."""
        fields.setdefault("allowed_mentions", NO_PINGS)
        try:
            if (
                watcher.interaction is not None
                and time.monotonic() - watcher.started < INTERACTION_EDIT_WINDOW
            ):
                try:
                    await watcher.interaction.edit_original_response(**fields)
                    return
                except discord.HTTPException as exc:
                    if not token_expired(exc):
                        raise
                    watcher.interaction = None  # its 15 minutes are up: the channel message from now on
            if watcher.message is None:
                channel = self.bot.get_partial_messageable(
                    watcher.job.channel_id, guild_id=watcher.job.guild_id
                )
                watcher.message = await channel.send(**fields)
            else:
                await watcher.message.edit(**fields)
        except discord.HTTPException as exc:
            log.warning("Could not update progress of job %s: %s", watcher.job.id, exc)

    @commands.Cog.listener()
    async def on_training_finished(self, outcome: JobOutcome) -> None:
        job = outcome.job
        watcher = self.progress_messages.pop(job.id, None)
        if outcome.state == "done":
            m = outcome.model.metrics
            status = (
                f"✅ Done in {format_duration(m.get('train_seconds'))}: validation loss "
                f"{number(m.get('initial_val_loss'))} → {number(m.get('val_loss'))}, "
                f"perplexity {number(m.get('val_perplexity'), 1)}."
                + (f" It {m['stopped_early']}." if m.get("stopped_early") else "")
            )
            voice = voice_text(m.get("voice_report"))
            grown = ", ".join(filter(None, [outcome.model.version_label, continued_line(m)]))
            text = (
                f"<@{job.requested_by}> `{job.handle}` is ready"
                + (f" ({grown})" if outcome.model.version > 1 else "")
                + f". {status[2:]} "
                + (f"Voice: {voice.splitlines()[0]}. " if voice else "")
                + f"Try `/impersonate {job.handle}`."
            )
        elif outcome.state == "cancelled":
            status = "🛑 Cancelled."
            text = f"<@{job.requested_by}> training of `{job.handle}` was cancelled."
        else:
            status = f"❌ Failed: {outcome.error}"
            text = f"<@{job.requested_by}> training of `{job.handle}` failed: {outcome.error}"
        if watcher is not None:
            async with watcher.lock:
                await self.show(watcher, embed=self.progress_embed(job, None, status))
        curve = None
        path = self.core.loss_curve(outcome.model) if outcome.model is not None else None
        if path is not None:
            curve = discord.File(path, filename=f"{job.handle}-loss.png")
        await self.tell_channel(job, text, file=curve)

    async def tell_channel(self, job: JobRecord, text: str, file: discord.File | None = None) -> None:
        """A normal channel message (interaction tokens expire), pinging only the requester."""
        if job.channel_id is None:
            return
        mention = discord.AllowedMentions(
            users=[discord.Object(job.requested_by)] if job.requested_by else False,
            everyone=False,
            roles=False,
        )
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            await channel.send(
                fit_content(text), allowed_mentions=mention, **({"file": file} if file else {})
            )
        except discord.HTTPException as exc:
            log.warning("Could not tell channel %s about job %s: %s", job.channel_id, job.id, exc)

    @commands.Cog.listener()
    async def on_training_resumed(self, job: JobRecord, step: int | None) -> None:
        """A training worker stopped mid-training and another one took the job over."""
        resume = f"resumes from its checkpoint at step {step}" if step else "starts over"
        await self.tell_channel(
            job,
            f"<@{job.requested_by}> training of `{job.handle}` was interrupted (its worker stopped); "
            f"another worker took it over and it {resume}.",
        )

    async def announce_recovered(self, jobs: list[JobRecord]) -> None:
        await self.bot.wait_until_ready()
        for job in jobs:
            self.progress_messages[job.id] = ProgressMessage(job=job, interaction=None)
            step = self.core.trainings.resume_step(job.id)
            resume = f"resumes from its checkpoint at step {step}" if step else "starts over"
            await self.tell_channel(
                job,
                f"<@{job.requested_by}> training of `{job.handle}` was interrupted by a restart; "
                f"it is queued again and {resume}.",
            )


async def setup(bot) -> None:
    await bot.add_cog(TrainingCog(bot))
