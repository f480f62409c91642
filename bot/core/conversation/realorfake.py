"""`service.games`: /realorfake, a guessing game on a persona's posts.

A round shows one post, 50/50 one of the person's real held-out posts (from the upload the admin
trained on, kept with the persona; never Discord messages) or one the persona writes now with
/impersonate's sampling. Members vote once each; the round ends after REALORFAKE_ROUND_SECONDS
or REALORFAKE_VOTES_TO_CLOSE votes, whichever comes first, and shows the answer and the tally.
The scores (each persona's fool rate, each member's accuracy) are counted from the stored votes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from bot.core.errors import UserError
from bot.core.personas.keptposts import kept_posts
from bot.core.storage import GameRound, Score

VOTES = {"real": True, "generated": False}


@dataclass
class Vote:
    outcome: str  # counted | again | closed | missing
    closes_now: bool = False  # this vote reached the votes that end the round


class RealOrFake:
    def __init__(self, service, *, clock: Callable[[], float], rng: random.Random | None = None):
        self.service = service
        self.clock = clock
        self.rng = rng or random.Random()

    @property
    def games(self):
        return self.service.storage.games

    async def check_channel(self, channel_id: int) -> None:
        """One open round per channel, and REALORFAKE_CHANNEL_GAP_SECONDS between two."""
        now, last = self.clock(), await self.games.last_in_channel(channel_id)
        if last is not None and last.closed_at is None and last.closes_at > now:
            raise UserError("A round is still open in this channel: vote on it first.")
        wait = (last.opened_at + self.service.settings.realorfake_channel_gap_seconds - now) if last else 0
        if wait > 0:
            raise UserError(f"One round at a time: the next one can start in {int(wait) + 1} s.")

    async def start(self, guild_id: int, channel_id: int, handle: str, opened_by: int) -> GameRound:
        """A new round in this channel, or a short reason why not."""
        model, folder = await self.service.model_folder(guild_id, handle)
        await self.check_channel(channel_id)
        settings, now = self.service.settings, self.clock()
        posts = await asyncio.to_thread(kept_posts, folder)
        if posts is None or not posts[1]:
            raise UserError(
                f"`{model.handle}` has no real posts kept to play with (imported, or trained before "
                "posts were kept with a persona); train it again to play."
            )
        is_real = self.rng.random() < 0.5
        if is_real:
            post = self.rng.choice(posts[1])
        else:
            written = await self.service.write_posts(model, "", 1)
            if not written:
                raise UserError("The persona wrote nothing usable this time; try again.")
            post = written[0]
        round_ = GameRound(
            id=0,
            guild_id=guild_id,
            channel_id=channel_id,
            handle=model.handle,
            is_real=is_real,
            post=post,
            opened_at=now,
            closes_at=now + settings.realorfake_round_seconds,
            opened_by=opened_by,
        )
        return await self.games.open(round_)

    async def shown(self, round_: GameRound, message_id: int) -> None:
        await self.games.set_message(round_.id, message_id)

    async def vote(self, guild_id: int, round_id: int, user_id: int, choice: str) -> Vote:
        if choice not in VOTES:
            return Vote("missing")
        outcome = await self.games.vote(guild_id, round_id, user_id, VOTES[choice], self.clock())
        closes = outcome == "counted" and (
            await self.games.vote_count(round_id) >= self.service.settings.realorfake_votes_to_close
        )
        return Vote(outcome, closes)

    async def close(self, guild_id: int, round_id: int) -> GameRound | None:
        """The round with its tally, closed now; None if it was closed already (by another process)."""
        return await self.games.close(guild_id, round_id, self.clock())

    async def due(self) -> list[GameRound]:
        return await self.games.due(self.clock())

    async def leaderboard(self, guild_id: int) -> tuple[list[Score], list[Score]]:
        """(members by right answers, personas by fool rate), this server only."""
        return await self.games.members(guild_id), await self.games.fool_rates(guild_id)

    async def fool_rate(self, guild_id: int, handle: str) -> Score | None:
        scores = await self.games.fool_rates(guild_id, handle)
        return scores[0] if scores else None
