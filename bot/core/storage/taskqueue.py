"""The job queue of trainings on workers: procrastinate, on the registry's own PostgreSQL.

One server holds the registry and the queue. The `training_jobs` row stays the truth about a
training (what Discord is shown); the procrastinate job only carries its id to some worker.
procrastinate is imported here and only here, lazily: the default bot (SQLite, in-process
training) never loads it and does not need it installed (it is in requirements-scale.txt).

Each procrastinate job for training #N is deferred with `lock="training-N"`, so two of them never
run at the same time, and `queueing_lock="training-N"`, so the bot may re-defer a queued
training at every start without queueing it twice.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

TASK_NAME = "tweetalike.train"
QUEUE = "trainings"


def conninfo(url: str) -> str:
    """A libpq connection string from DATABASE_URL (postgresql://, with or without +driver)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def training_app(url: str) -> Any:
    """A procrastinate App on the database at `url` (not opened yet)."""
    import procrastinate

    # procrastinate's pool checks each connection before lending it, so a restarted server
    # costs one failed check, not an error.
    connector = procrastinate.PsycopgConnector(conninfo=conninfo(url), min_size=1, max_size=4)
    return procrastinate.App(connector=connector)


async def ensure_schema(app: Any) -> None:
    """Install procrastinate's tables once. Processes starting together take turns: the lock, the
    check and the install run on one connection, in one transaction (the lock ends with it)."""
    async with app.connector.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7217052)")
        found = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
        if found[0] is None:
            await conn.execute(app.schema_manager.get_schema())  # no parameters: sent as written
            log.info("Installed the training queue's tables (procrastinate)")


def training_lock(job_id: int) -> str:
    return f"training-{int(job_id)}"


async def defer_training(app: Any, job_id: int) -> bool:
    """Queue training #job_id for a worker; False when it is already queued (not an error)."""
    from procrastinate.exceptions import AlreadyEnqueued

    lock = training_lock(job_id)
    deferrer = app.configure_task(TASK_NAME, queue=QUEUE, lock=lock, queueing_lock=lock)
    try:
        await deferrer.defer_async(job_id=int(job_id))
    except AlreadyEnqueued:
        return False
    return True


async def retry_stalled(app: Any, stalled_after: float) -> list[int]:
    """Put back in the queue the trainings whose worker stopped sending heartbeats (killed, cut off).

    procrastinate's own mechanism: `get_stalled_jobs` finds the jobs of workers whose heartbeat is
    older than `stalled_after` seconds, and `retry_job` makes them runnable again.
    """
    manager = app.job_manager
    stalled = await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=stalled_after)
    for job in stalled:
        log.warning("Training queue job %s (%s) lost its worker; it is queued again", job.id, job.task_kwargs)
        await manager.retry_job(job)
    return [job.id for job in stalled]


def queue_worker(app: Any, **options: Any) -> Any:
    """A procrastinate worker on the trainings queue (run it with `await worker.run()`)."""
    from procrastinate.worker import Worker

    return Worker(app=app, queues=[QUEUE], **options)


async def keep_alive(app: Any, worker: Any) -> None:
    """One more heartbeat for `worker`. procrastinate's own heartbeat task ends the worker loop at
    the first database error; the loop then waits for the running training to end, and without
    this the training would look stalled to the other workers (and be taken over) meanwhile."""
    if worker.worker_id is not None:
        await app.job_manager.update_heartbeat(worker.worker_id)
