"""/realorfake: is this post the person's, or the persona's? Members vote with buttons.

The rules are the core's (`core.games`, core/conversation/realorfake.py). The buttons are dynamic
items whose custom id carries the round (`rof:<round>:real`), so a round's buttons keep working
after a restart; a tick closes rounds whose time is up, in whichever process sees them first.
"""

from __future__ import annotations

import logging
import re

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.core.errors import UserError
from bot.core.storage import GameRound
from bot.discord.cogs.impersonate import spend_guild_budget
from bot.discord.discord_limits import fit_embed
from bot.discord.options import Handle
from bot.discord.ui import NO_PINGS, defer_public, handle_autocomplete

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0
GAME_LABEL = "🎲 Real or generated? A tweetalike game: this post may be generated."
ANSWERS = {
    "counted": "Vote counted. The answer comes when the round ends.",
    "again": "You have already voted in this round.",
    "closed": "This round is over.",
    "missing": "This round is gone (its persona was deleted).",
}


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"rof:(?P<round>\d+):(?P<choice>real|generated)"
):
    def __init__(self, round_id: int, choice: str):
        label, style = (
            ("Real", discord.ButtonStyle.success)
            if choice == "real"
            else ("Generated", discord.ButtonStyle.primary)
        )
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"rof:{round_id}:{choice}"))
        self.round_id, self.choice = round_id, choice

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ):
        return cls(int(match["round"]), match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("RealOrFakeCog")
        core = interaction.client.core
        vote = await core.games.vote(interaction.guild_id, self.round_id, interaction.user.id, self.choice)
        await interaction.response.send_message(ANSWERS[vote.outcome], ephemeral=True)
        if vote.closes_now and cog is not None:
            await cog.close_round(interaction.guild_id, self.round_id)


def round_view(round_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton(round_id, "real"))
    view.add_item(VoteButton(round_id, "generated"))
    return view


def round_embed(r: GameRound, seconds: int, votes_to_close: int) -> discord.Embed:
    embed = discord.Embed(title=GAME_LABEL, description=r.post, colour=discord.Colour.gold())
    embed.set_footer(
        text=f"Is this a real post by @{r.handle}, or one its persona wrote? Vote once; the answer "
        f"comes in {seconds} s or after {votes_to_close} votes."
    )
    return fit_embed(embed)


def reveal_embed(r: GameRound) -> discord.Embed:
    answer = "a **real** post (held out from its training)" if r.is_real else "**generated** by the persona"
    right = r.real_votes if r.is_real else r.generated_votes
    total = r.real_votes + r.generated_votes
    embed = discord.Embed(
        title="🎲 Real or generated? The answer", description=r.post, colour=discord.Colour.dark_gold()
    )
    embed.add_field(name="It was", value=f"{answer} of @{r.handle}", inline=False)
    embed.add_field(
        name="Votes", value=f"Real {r.real_votes} · Generated {r.generated_votes} · {right} of {total} right"
    )
    return fit_embed(embed)


class RealOrFakeCog(commands.Cog):
    realorfake = app_commands.Group(
        name="realorfake", description="Guess: a real post or the persona's?", guild_only=True
    )

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(VoteButton)
        self.tick.start()

    async def cog_unload(self) -> None:
        self.tick.cancel()
        self.bot.remove_dynamic_items(VoteButton)

    @realorfake.command(name="play", description="Show a post: is it real or generated? Everyone votes")
    @app_commands.describe(handle="Which persona")
    @app_commands.check(spend_guild_budget)
    @app_commands.autocomplete(handle=handle_autocomplete)
    async def play(self, interaction: discord.Interaction, handle: Handle) -> None:
        # An unknown persona or a busy channel gets an ephemeral answer, before the public "thinking".
        await self.core.get_model(interaction.guild_id, handle)
        await self.core.games.check_channel(interaction.channel_id)
        await defer_public(interaction)
        r = await self.core.games.start(
            interaction.guild_id, interaction.channel_id, handle, interaction.user.id
        )
        settings = self.bot.settings
        interaction.extras["answered"] = True
        message = await interaction.edit_original_response(
            embed=round_embed(r, settings.realorfake_round_seconds, settings.realorfake_votes_to_close),
            view=round_view(r.id),
            allowed_mentions=NO_PINGS,
        )
        await self.core.games.shown(r, message.id)

    @realorfake.command(
        name="leaderboard", description="Who spots the persona best, and which persona fools most"
    )
    async def leaderboard(self, interaction: discord.Interaction) -> None:
        members, personas = await self.core.games.leaderboard(interaction.guild_id)
        if not members and not personas:
            raise UserError("No round has ended in this server yet: start one with `/realorfake play`.")
        embed = discord.Embed(title="🎲 Real or generated? Leaderboard", colour=discord.Colour.gold())
        people = [f"<@{s.key}> {s.hits}/{s.votes} right ({s.rate:.0%})" for s in members]
        fools = [f"`@{s.key}` fooled {s.hits} of {s.votes} votes ({s.rate:.0%})" for s in personas]
        embed.add_field(name="Members", value="\n".join(people) or "no votes yet", inline=False)
        embed.add_field(
            name="Personas (generated posts voted real)", value="\n".join(fools) or "none yet", inline=False
        )
        await interaction.response.send_message(
            embed=fit_embed(embed), ephemeral=True, allowed_mentions=NO_PINGS
        )

    async def close_round(self, guild_id: int, round_id: int) -> None:
        """Close a round (once, whoever gets there first) and show the answer in its message."""
        r = await self.core.games.close(guild_id, round_id)
        if r is None or r.message_id is None:
            return
        channel = self.bot.get_partial_messageable(r.channel_id, guild_id=r.guild_id)
        try:
            await channel.get_partial_message(r.message_id).edit(embed=reveal_embed(r), view=None)
        except discord.HTTPException as exc:  # the message or the channel is gone: the scores stay
            log.info("Could not reveal round %s: %s", r.id, exc)

    @tasks.loop(seconds=TICK_SECONDS)
    async def tick(self) -> None:
        try:
            for r in await self.core.games.due():
                await self.close_round(r.guild_id, r.id)
        except Exception:  # the next tick tries again; the loop must not die
            log.exception("Closing due /realorfake rounds failed")

    @tick.before_loop
    async def before_tick(self) -> None:
        await self.bot.wait_until_ready()


async def setup(bot) -> None:
    await bot.add_cog(RealOrFakeCog(bot))
