"""Members' own voices, with consent: opt-in, collected messages, and erasure.

A persona built from a member's messages records that member (model_sources). Opting out
deletes every such persona in every guild, the collected text and the personas' schedules,
and cancels pending trainings on their messages; `/voice delete` does the same for one guild.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .schedules import Scheduler


@dataclass
class Erasure:
    personas: list[tuple[int, str]] = field(default_factory=list)
    schedules: int = 0
    jobs_cancelled: int = 0
    messages: int = 0


class Voices:
    def __init__(self, core):
        self.core = core

    @property
    def db(self):
        return self.core.registry.db

    async def set_consent(self, user_id: int, opted_in: bool) -> None:
        await self.db.execute(
            "INSERT INTO voice_consent (user_id, opted_in, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET opted_in = excluded.opted_in, updated_at = excluded.updated_at",
            (user_id, int(opted_in), time.time()),
        )

    async def opted_in(self, user_id: int) -> bool:
        async with self.db.execute("SELECT opted_in FROM voice_consent WHERE user_id = ?", (user_id,)) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    # -- collected history ------------------------------------------------------------------------

    async def cursor(self, guild_id: int, user_id: int, channel_id: int) -> tuple[int | None, bool]:
        async with self.db.execute(
            "SELECT before_id, finished FROM history_cursors WHERE guild_id = ? AND user_id = ? AND channel_id = ?",
            (guild_id, user_id, channel_id),
        ) as cur:
            row = await cur.fetchone()
        return (row[0], bool(row[1])) if row else (None, False)

    async def save_page(self, guild_id: int, user_id: int, channel_id: int, messages: list[tuple[int, str]],
                        before_id: int | None, finished: bool) -> None:
        """Store one page of a member's messages and where the next page starts, in one transaction."""
        await self.db.execute("BEGIN")
        try:
            await self.db.executemany(
                "INSERT OR IGNORE INTO collected_messages (message_id, guild_id, user_id, channel_id, text) "
                "VALUES (?, ?, ?, ?, ?)",
                [(mid, guild_id, user_id, channel_id, text) for mid, text in messages],
            )
            await self.db.execute(
                "INSERT OR REPLACE INTO history_cursors (guild_id, user_id, channel_id, before_id, finished) "
                "VALUES (?, ?, ?, ?, ?)", (guild_id, user_id, channel_id, before_id, int(finished)),
            )
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise

    async def collected(self, guild_id: int, user_id: int) -> list[str]:
        async with self.db.execute(
            "SELECT text FROM collected_messages WHERE guild_id = ? AND user_id = ? ORDER BY message_id",
            (guild_id, user_id),
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    # -- who used whose data ----------------------------------------------------------------------

    async def personas_using(self, user_id: int, guild_id: int | None = None) -> list[tuple[int, str]]:
        query = "SELECT guild_id, handle FROM model_sources WHERE user_id = ?"
        params: tuple = (user_id,)
        if guild_id is not None:
            query += " AND guild_id = ?"
            params += (guild_id,)
        async with self.db.execute(query + " ORDER BY guild_id, handle", params) as cur:
            return [(row[0], row[1]) for row in await cur.fetchall()]

    async def erase(self, user_id: int, guild_id: int | None = None) -> Erasure:
        """Delete the member's personas, their schedules, pending trainings and collected text."""
        report = Erasure()
        scheduler = Scheduler(self.core.registry)
        for g, handle in await self.personas_using(user_id, guild_id):
            if await self.core.registry.get_model(g, handle) is not None:
                await self.core.delete_model(g, handle)
                report.personas.append((g, handle))
            report.schedules += await scheduler.remove_for_handle(g, handle)
        scope, params = ("", (user_id,)) if guild_id is None else (" AND guild_id = ?", (user_id, guild_id))
        async with self.db.execute(
            f"SELECT id, guild_id, state FROM training_jobs WHERE source_user_id = ?{scope} AND state IN ('queued', 'running')",
            params,
        ) as cur:
            jobs = await cur.fetchall()
        for job_id, g, state in jobs:
            if state == "running":
                self.core.queue.cancel_running(job_id)
            else:
                await self.core.registry.cancel_queued_job(g, job_id)
            report.jobs_cancelled += 1
        async with self.db.execute(f"DELETE FROM collected_messages WHERE user_id = ?{scope} RETURNING message_id", params) as cur:
            report.messages = len(await cur.fetchall())
        await self.db.execute(f"DELETE FROM history_cursors WHERE user_id = ?{scope}", params)
        await self.db.execute(f"DELETE FROM model_sources WHERE user_id = ?{scope}", params)
        return report

    async def opt_out(self, user_id: int) -> Erasure:
        await self.set_consent(user_id, False)
        return await self.erase(user_id)
