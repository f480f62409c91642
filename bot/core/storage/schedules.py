"""Auto-post schedules: their timing, their pause state and the nonce of a post in flight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Integer, delete, func, literal, or_, select, update

from bot.core.storage.database import Database
from bot.core.storage.records import Schedule
from bot.core.storage.schema import schedules

if TYPE_CHECKING:
    from bot.core.shards import GuildShards


class Schedules:
    def __init__(self, db: Database):
        self.db = db

    async def count(self, guild_id: int) -> int:
        return int(
            await self.db.scalar(
                select(func.count()).select_from(schedules).where(schedules.c.guild_id == guild_id)
            )
        )

    async def add(self, draft: Schedule) -> Schedule:
        statement = (
            schedules.insert()
            .values(
                guild_id=draft.guild_id,
                handle=draft.handle,
                channel_id=draft.channel_id,
                interval_s=draft.interval_s,
                jitter_s=draft.jitter_s,
                prompt=draft.prompt,
                next_run_at=draft.next_run_at,
                created_by=draft.created_by,
                created_at=draft.created_at,
                daily_times=",".join(draft.daily_times) if draft.daily_times else None,
                timezone=draft.timezone,
            )
            .returning(*schedules.c)
        )
        async with self.db.write() as conn:
            return Schedule.from_row((await conn.execute(statement)).one())

    async def get(self, guild_id: int, schedule_id: int) -> Schedule | None:
        query = select(schedules).where(schedules.c.id == schedule_id, schedules.c.guild_id == guild_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return Schedule.from_row(row) if row else None

    async def list(self, guild_id: int) -> list[Schedule]:
        query = select(schedules).where(schedules.c.guild_id == guild_id).order_by(schedules.c.id)
        async with self.db.read() as conn:
            return [Schedule.from_row(row) for row in await conn.execute(query)]

    async def due(self, now: float) -> list[Schedule]:
        query = (
            select(schedules)
            .where(schedules.c.paused == 0, schedules.c.next_run_at <= now)
            .order_by(schedules.c.next_run_at)
        )
        async with self.db.read() as conn:
            return [Schedule.from_row(row) for row in await conn.execute(query)]

    async def claim_due(
        self,
        now: float,
        *,
        owner: str,
        lease_until: float,
        shards: GuildShards | None = None,
        limit: int = 50,
    ) -> list[Schedule]:
        """Claim the due posts of the guilds on `shards` (None: every guild) for `owner`.

        One UPDATE moves each row's claim to `owner` only where no other live claim holds it, so two
        processes never both get a post: SQLite serialises the write transactions (BEGIN
        IMMEDIATE), PostgreSQL locks the rows it picks and skips those another claimer holds.
        A claim expires at `lease_until`; its owner (a restart of it, by name) takes it back at once.
        """
        claimable = (
            schedules.c.paused == 0,
            schedules.c.next_run_at <= now,
            or_(
                schedules.c.claimed_until.is_(None),
                schedules.c.claimed_until <= now,
                schedules.c.claimed_by == owner,
            ),
        )
        picked = select(schedules.c.id).where(*claimable)
        if shards is not None:  # Discord's formula: shard = (guild_id >> 22) % count
            # PostgreSQL has bigint >> integer only: the shift is typed Integer.
            shift = schedules.c.guild_id.op(">>", return_type=BigInteger)(literal(22, Integer))
            shard = shift % shards.count
            picked = picked.where(shard.in_(shards.ids))
        picked = picked.order_by(schedules.c.next_run_at).limit(limit)
        async with self.db.read() as conn:  # most ticks find nothing: no write transaction then
            if (await conn.execute(picked)).first() is None:
                return []
        statement = (
            update(schedules)
            .where(schedules.c.id.in_(picked.with_for_update(skip_locked=True)), *claimable)
            .values(claimed_by=owner, claimed_until=lease_until)
            .returning(*schedules.c)
        )
        async with self.db.write() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted((Schedule.from_row(row) for row in rows), key=lambda s: s.next_run_at)

    async def _update(self, schedule_id: int, guild_id: int | None = None, **values) -> None:
        statement = update(schedules).where(schedules.c.id == schedule_id)
        if guild_id is not None:
            statement = statement.where(schedules.c.guild_id == guild_id)
        async with self.db.write() as conn:
            await conn.execute(statement.values(**values))

    async def pause(self, guild_id: int, schedule_id: int, reason: str | None) -> None:
        await self._update(
            schedule_id, guild_id, paused=1, pause_reason=reason, claimed_by=None, claimed_until=None
        )

    async def resume(self, guild_id: int, schedule_id: int, next_run_at: float) -> None:
        await self._update(
            schedule_id, guild_id, paused=0, pause_reason=None, failures=0, next_run_at=next_run_at
        )

    async def remove(self, guild_id: int, schedule_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                delete(schedules).where(schedules.c.id == schedule_id, schedules.c.guild_id == guild_id)
            )

    async def remove_for_handle(self, guild_id: int, handle: str) -> int:
        statement = (
            delete(schedules)
            .where(schedules.c.guild_id == guild_id, schedules.c.handle == handle)
            .returning(schedules.c.id)
        )
        async with self.db.write() as conn:
            return len((await conn.execute(statement)).all())

    async def set_pending(self, schedule_id: int, nonce: str, since: float) -> None:
        """Store the nonce of the post about to be sent, before it is sent."""
        await self._update(schedule_id, pending_nonce=nonce, pending_since=since)

    async def posted(self, schedule_id: int, now: float, next_run_at: float) -> None:
        """The post went out: clear the nonce, record the run, set the next one."""
        await self._update(
            schedule_id,
            pending_nonce=None,
            pending_since=None,
            last_run_at=now,
            next_run_at=next_run_at,
            failures=0,
            claimed_by=None,
            claimed_until=None,
        )

    async def failed(self, schedule_id: int, next_run_at: float) -> int:
        """The post was refused: count it, drop the nonce (no post was created), set the next run.

        Returns the failures in a row (0 if the schedule is gone).
        """
        statement = (
            update(schedules)
            .where(schedules.c.id == schedule_id)
            .values(
                failures=schedules.c.failures + 1,
                pending_nonce=None,
                pending_since=None,
                next_run_at=next_run_at,
                claimed_by=None,
                claimed_until=None,
            )
            .returning(schedules.c.failures)
        )
        async with self.db.write() as conn:
            failures = (await conn.execute(statement)).scalar_one_or_none()
        return int(failures or 0)

    async def postpone(self, schedule_id: int, next_run_at: float) -> None:
        """Nothing went out this window; the nonce stays (a 5xx post may exist after all)."""
        await self._update(schedule_id, next_run_at=next_run_at, claimed_by=None, claimed_until=None)
