"""/realorfake: rounds, one vote per member per round, and the scores counted from the votes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, delete, func, select, update

from bot.core.storage.database import Database
from bot.core.storage.records import GameRound, from_row
from bot.core.storage.schema import game_rounds as rounds
from bot.core.storage.schema import game_votes as votes


@dataclass
class Score:
    """A member's votes in a guild's closed rounds, or a persona's generated rounds' votes."""

    key: int | str  # user id, or persona handle
    votes: int
    hits: int  # the member's right answers, or the persona's generated posts voted real

    @property
    def rate(self) -> float:
        return self.hits / self.votes if self.votes else 0.0


class Games:
    def __init__(self, db: Database):
        self.db = db

    async def open(self, r: GameRound) -> GameRound:
        values = {
            "guild_id": r.guild_id,
            "channel_id": r.channel_id,
            "handle": r.handle,
            "is_real": int(r.is_real),
            "post": r.post,
            "opened_by": r.opened_by,
            "opened_at": r.opened_at,
            "closes_at": r.closes_at,
        }
        async with self.db.write() as conn:
            r.id = (await conn.execute(rounds.insert().values(values).returning(rounds.c.id))).scalar_one()
        return r

    async def set_message(self, round_id: int, message_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(rounds).where(rounds.c.id == round_id).values(message_id=message_id))

    async def get(self, guild_id: int, round_id: int) -> GameRound | None:
        query = select(rounds).where(rounds.c.id == round_id, rounds.c.guild_id == guild_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return _round(row) if row else None

    async def last_in_channel(self, channel_id: int) -> GameRound | None:
        query = select(rounds).where(rounds.c.channel_id == channel_id).order_by(rounds.c.opened_at.desc())
        async with self.db.read() as conn:
            row = (await conn.execute(query.limit(1))).first()
        return _round(row) if row else None

    async def vote(self, guild_id: int, round_id: int, user_id: int, says_real: bool, now: float) -> str:
        """'counted', 'again' (this member already voted), 'closed' or 'missing'; and the count."""
        query = select(rounds).where(rounds.c.id == round_id, rounds.c.guild_id == guild_id)
        async with self.db.write() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return "missing"
            if row.closed_at is not None or row.closes_at <= now:
                return "closed"
            insert = self.db.insert(votes).values(
                round_id=round_id, guild_id=guild_id, user_id=user_id, says_real=int(says_real), voted_at=now
            )
            once = insert.on_conflict_do_nothing(index_elements=["round_id", "user_id"])
            added = (await conn.execute(once.returning(votes.c.user_id))).first()
            return "counted" if added is not None else "again"

    async def vote_count(self, round_id: int) -> int:
        async with self.db.read() as conn:
            query = select(func.count()).select_from(votes).where(votes.c.round_id == round_id)
            return int((await conn.execute(query)).scalar_one())

    async def close(self, guild_id: int, round_id: int, now: float) -> GameRound | None:
        """Close the round, once across processes; None when another caller closed it first."""
        statement = (
            update(rounds)
            .where(rounds.c.id == round_id, rounds.c.guild_id == guild_id, rounds.c.closed_at.is_(None))
            .values(closed_at=now)
            .returning(*rounds.c)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(statement)).first()
            if row is None:
                return None
            counted = select(votes.c.says_real, func.count()).where(votes.c.round_id == round_id)
            tally = (await conn.execute(counted.group_by(votes.c.says_real))).all()
        counts = {bool(says_real): n for says_real, n in tally}
        return _round(row, real_votes=counts.get(True, 0), generated_votes=counts.get(False, 0))

    async def due(self, now: float, limit: int = 20) -> list[GameRound]:
        query = select(rounds).where(rounds.c.closed_at.is_(None), rounds.c.closes_at <= now)
        query = query.order_by(rounds.c.closes_at).limit(limit)
        async with self.db.read() as conn:
            return [_round(r) for r in (await conn.execute(query)).all()]

    async def members(self, guild_id: int, limit: int = 10) -> list[Score]:
        """Members by right answers in closed rounds (ties: fewer votes first)."""
        right = func.sum(case((votes.c.says_real == rounds.c.is_real, 1), else_=0))
        closed = and_(rounds.c.id == votes.c.round_id, rounds.c.closed_at.is_not(None))
        query = (
            select(votes.c.user_id, func.count().label("n"), right.label("hits"))
            .select_from(votes.join(rounds, closed))
            .where(votes.c.guild_id == guild_id)
            .group_by(votes.c.user_id)
            .order_by(right.desc(), func.count())
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [Score(r.user_id, r.n, int(r.hits)) for r in (await conn.execute(query)).all()]

    async def fool_rates(self, guild_id: int, handle: str | None = None) -> list[Score]:
        """Per persona: votes on its generated posts in closed rounds, and how many said real."""
        fooled = func.sum(votes.c.says_real)
        query = (
            select(rounds.c.handle, func.count().label("n"), fooled.label("hits"))
            .select_from(rounds.join(votes, votes.c.round_id == rounds.c.id))
            .where(rounds.c.guild_id == guild_id, rounds.c.is_real == 0, rounds.c.closed_at.is_not(None))
            .group_by(rounds.c.handle)
            .order_by(fooled.desc())
        )
        if handle is not None:
            query = query.where(rounds.c.handle == handle)
        async with self.db.read() as conn:
            return [Score(r.handle, r.n, int(r.hits)) for r in (await conn.execute(query)).all()]

    async def delete_for_persona(self, guild_id: int, handle: str) -> int:
        """The persona's rounds and their votes (the persona is deleted or erased)."""
        mine = and_(rounds.c.guild_id == guild_id, rounds.c.handle == handle)
        async with self.db.write() as conn:
            await conn.execute(delete(votes).where(votes.c.round_id.in_(select(rounds.c.id).where(mine))))
            return (await conn.execute(delete(rounds).where(mine))).rowcount

    async def forget_member(self, user_id: int, guild_id: int | None = None) -> None:
        statement = delete(votes).where(votes.c.user_id == user_id)
        if guild_id is not None:
            statement = statement.where(votes.c.guild_id == guild_id)
        async with self.db.write() as conn:
            await conn.execute(statement)


def _round(row, **tally) -> GameRound:
    return from_row(GameRound, row, is_real=bool(row._mapping["is_real"]), **tally)
