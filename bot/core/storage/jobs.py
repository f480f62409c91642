"""Training jobs: queued, claimed by one worker at a time, finished, re-queued after a crash."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import case, func, select, update

from bot.core.storage.database import Database
from bot.core.storage.records import JobRecord, from_row
from bot.core.storage.schema import ACTIVE_STATES
from bot.core.storage.schema import training_jobs as jobs

# Every column but the corpus, which only the worker that trains the job reads.
_COLUMNS = [c for c in jobs.c if c.name != "corpus_json"]


class Jobs:
    def __init__(self, db: Database):
        self.db = db

    async def create(
        self,
        *,
        guild_id: int,
        handle: str,
        display_name: str,
        base_model: str,
        method: str,
        epochs: int,
        corpus: list[str],
        stats: dict[str, Any],
        avatar_url: str | None = None,
        requested_by: int | None = None,
        channel_id: int | None = None,
        source_user_id: int | None = None,
        continues: int | None = None,
    ) -> JobRecord:
        statement = jobs.insert().values(
            guild_id=guild_id,
            handle=handle,
            display_name=display_name,
            avatar_url=avatar_url,
            base_model=base_model,
            method=method,
            epochs=epochs,
            requested_by=requested_by,
            channel_id=channel_id,
            corpus_json=json.dumps(corpus, ensure_ascii=False),
            stats_json=json.dumps(stats),
            created_at=time.time(),
            source_user_id=source_user_id,
            continues=continues,
        )
        async with self.db.write() as conn:
            return from_row(JobRecord, (await conn.execute(statement.returning(*_COLUMNS))).one())

    async def claim_next(self) -> JobRecord | None:
        """Atomically move the oldest queued job to running and return it.

        SQLite: the write transaction (BEGIN IMMEDIATE) serialises claims. PostgreSQL: the row
        lock with SKIP LOCKED lets workers in several processes each take a different job.
        """
        oldest = (
            select(jobs.c.id)
            .where(jobs.c.state == "queued")
            .order_by(jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(jobs)
            .where(jobs.c.id == oldest, jobs.c.state == "queued")
            .values(state="running", started_at=time.time())
            .returning(*_COLUMNS)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(statement)).first()
        return from_row(JobRecord, row) if row else None

    async def corpus(self, job_id: int) -> list[str]:
        async with self.db.read() as conn:
            text = (await conn.execute(select(jobs.c.corpus_json).where(jobs.c.id == job_id))).scalar()
        return json.loads(text) if text else []

    async def update_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running")
            .values(progress_json=json.dumps(progress))
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def finish(self, job_id: int, state: str, error: str | None = None) -> None:
        """End a job (done, failed, cancelled); the corpus is not kept after training."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state.in_(ACTIVE_STATES))
            .values(state=state, error=error, finished_at=time.time(), corpus_json="[]", announced=1)
        )
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def cancel_queued(self, guild_id: int, job_id: int) -> bool:
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.guild_id == guild_id, jobs.c.state == "queued")
            .values(state="cancelled", finished_at=time.time(), corpus_json="[]", announced=1)
            .returning(jobs.c.id)
        )
        async with self.db.write() as conn:
            return (await conn.execute(statement)).first() is not None

    async def get(self, guild_id: int, job_id: int) -> JobRecord | None:
        query = select(*_COLUMNS).where(jobs.c.id == job_id, jobs.c.guild_id == guild_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return from_row(JobRecord, row) if row else None

    async def list(self, guild_id: int, *, active_only: bool = False, limit: int = 20) -> list[JobRecord]:
        query = select(*_COLUMNS).where(jobs.c.guild_id == guild_id)
        if active_only:
            query = query.where(jobs.c.state.in_(ACTIVE_STATES))
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(jobs.c.id.desc()).limit(limit))
            return [from_row(JobRecord, row) for row in rows]

    async def active_for_handle(self, guild_id: int, handle: str) -> JobRecord | None:
        query = (
            select(*_COLUMNS)
            .where(jobs.c.guild_id == guild_id, jobs.c.handle == handle, jobs.c.state.in_(ACTIVE_STATES))
            .order_by(jobs.c.id)
            .limit(1)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return from_row(JobRecord, row) if row else None

    async def active_for_source(self, user_id: int, guild_id: int | None = None) -> list[JobRecord]:
        """Queued and running jobs trained on this member's messages."""
        query = select(*_COLUMNS).where(jobs.c.source_user_id == user_id, jobs.c.state.in_(ACTIVE_STATES))
        if guild_id is not None:
            query = query.where(jobs.c.guild_id == guild_id)
        async with self.db.read() as conn:
            return [from_row(JobRecord, row) for row in await conn.execute(query.order_by(jobs.c.id))]

    async def position(self, job_id: int) -> int:
        """How many jobs run or wait before this one (0 = it is next or running)."""
        query = (
            select(func.count()).select_from(jobs).where(jobs.c.state.in_(ACTIVE_STATES), jobs.c.id < job_id)
        )
        return int(await self.db.scalar(query))

    async def active_count(self) -> int:
        query = select(func.count()).select_from(jobs).where(jobs.c.state.in_(ACTIVE_STATES))
        return int(await self.db.scalar(query))

    async def active_ids(self) -> set[int]:
        """Every guild's queued and running jobs (start-up clean-up of their checkpoints)."""
        async with self.db.read() as conn:
            return set(
                (await conn.execute(select(jobs.c.id).where(jobs.c.state.in_(ACTIVE_STATES)))).scalars()
            )

    async def requeue_interrupted(self) -> list[JobRecord]:
        """Jobs left 'running' by a process that died go back to the queue (start-up only)."""
        statement = (
            update(jobs)
            .where(jobs.c.state == "running")
            .values(state="queued", interrupted=jobs.c.interrupted + 1, started_at=None)
            .returning(*_COLUMNS)
        )
        async with self.db.write() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted((from_row(JobRecord, row) for row in rows), key=lambda j: j.id)

    # -- trainings on workers (TRAINING_BACKEND=queue) ------------------------------------------
    # A worker owns a job while `worker` names it: its progress and its end are written only
    # under that condition, so a worker that lost its job to another (it was thought dead) can
    # neither overwrite the new owner's progress nor publish a second result.

    async def get_any(self, job_id: int) -> JobRecord | None:
        """A job whatever its guild (workers and the bot's watcher, never a guild's request)."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(jobs.c.id == job_id))).first()
        return from_row(JobRecord, row) if row else None

    async def take(self, job_id: int, worker: str, resume_step: int | None) -> JobRecord | None:
        """A worker takes a queued job, or one whose worker died ('running': counted as interrupted)."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state.in_(ACTIVE_STATES), jobs.c.cancel_requested == 0)
            .values(
                state="running",
                worker=worker,
                started_at=time.time(),
                resume_step=resume_step,
                interrupted=case(
                    (jobs.c.state == "running", jobs.c.interrupted + 1), else_=jobs.c.interrupted
                ),
            )
            .returning(*_COLUMNS)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(statement)).first()
        return from_row(JobRecord, row) if row else None

    async def report_progress(self, job_id: int, worker: str, progress: dict[str, Any]) -> str:
        """Write a worker's progress; returns 'ok', 'cancel' (the bot asked) or 'lost' (not its job now)."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.worker == worker)
            .values(progress_json=json.dumps(progress))
            .returning(jobs.c.cancel_requested)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            return "lost"
        return "cancel" if row.cancel_requested else "ok"

    async def finish_as(self, job_id: int, worker: str, state: str, error: str | None = None) -> bool:
        """A worker ends its job; the bot announces it (announced stays 0). False: not its job."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.worker == worker)
            .values(state=state, error=error, finished_at=time.time(), corpus_json="[]")
            .returning(jobs.c.id)
        )
        async with self.db.write() as conn:
            return (await conn.execute(statement)).first() is not None

    async def request_cancel(self, job_id: int) -> bool:
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running")
            .values(cancel_requested=1)
            .returning(jobs.c.id)
        )
        async with self.db.write() as conn:
            return (await conn.execute(statement)).first() is not None

    async def running(self) -> list[JobRecord]:
        query = select(*_COLUMNS).where(jobs.c.state == "running").order_by(jobs.c.id)
        async with self.db.read() as conn:
            return [from_row(JobRecord, row) for row in await conn.execute(query)]

    async def ended_unannounced(self) -> list[JobRecord]:
        query = select(*_COLUMNS).where(jobs.c.state.not_in(ACTIVE_STATES), jobs.c.announced == 0)
        async with self.db.read() as conn:
            return [from_row(JobRecord, row) for row in await conn.execute(query.order_by(jobs.c.id))]

    async def claim_announcement(self, job_id: int) -> bool:
        """The one bot process that gets True tells Discord that the job ended."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.announced == 0)
            .values(announced=1)
            .returning(jobs.c.id)
        )
        async with self.db.write() as conn:
            return (await conn.execute(statement)).first() is not None

    async def claim_resume_notice(self, job_id: int, interrupted: int) -> bool:
        """The one bot process that gets True tells the requester that the job was taken over."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.resumes_told < interrupted)
            .values(resumes_told=interrupted)
            .returning(jobs.c.id)
        )
        async with self.db.write() as conn:
            return (await conn.execute(statement)).first() is not None

    async def list_queued(self) -> list[JobRecord]:
        """Every guild's queued jobs, oldest first (the bot re-defers them to the workers at start-up)."""
        query = select(*_COLUMNS).where(jobs.c.state == "queued").order_by(jobs.c.id)
        async with self.db.read() as conn:
            return [from_row(JobRecord, row) for row in await conn.execute(query)]

    async def hand_back(self, job_id: int, worker: str) -> bool:
        """A worker that is shutting down puts its job back in the queue (to resume elsewhere)."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.worker == worker)
            .values(state="queued", worker=None, started_at=None, interrupted=jobs.c.interrupted + 1)
            .returning(jobs.c.id)
        )
        async with self.db.write() as conn:
            return (await conn.execute(statement)).first() is not None
