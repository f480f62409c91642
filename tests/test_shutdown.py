"""Leaving the event loop: tasks that outlive one cancellation still end (bot/runtime/shutdown.py)."""

import asyncio

from sqlalchemy import text

from bot.core.storage import ModelRecord, Storage
from bot.runtime.shutdown import cancel_leftover_tasks

# A query that keeps SQLite busy for a while (a recursive count), so it can be cancelled mid-way.
SLOW_QUERY = text(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT sum(x) FROM c"
)


def others() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def test_a_query_cancelled_twice_leaves_a_task_that_a_second_cancellation_ends(tmp_path):
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")

    async def slow_read():
        async with storage.db.read() as conn:
            return (await conn.execute(SLOW_QUERY)).scalar()

    reading = asyncio.create_task(slow_read())
    await asyncio.sleep(0.2)  # the query is running in aiosqlite's thread
    reading.cancel()  # e.g. the autopost tick when the cog unloads
    await asyncio.sleep(0)
    reading.cancel()  # e.g. the loop's teardown
    await asyncio.gather(reading, return_exceptions=True)
    await asyncio.sleep(0.5)
    # SQLAlchemy is closing the cancelled query's connection in a task of its own: the one that
    # hung the event loop's teardown, which cancels it only once.
    assert any("terminate_graceful_close" in repr(t) for t in others())
    assert await cancel_leftover_tasks() == []
    assert others() == []
    # The database is unharmed and the storage still works.
    await storage.models.save(
        ModelRecord(
            guild_id=1, handle="alice", display_name="Alice", base_model="gpt2", method="lora", path="1/a"
        )
    )
    assert [m.handle for m in await storage.models.list(1)] == ["alice"]
    assert await storage.integrity_check() == "ok"
    await storage.close()


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again():
    never = asyncio.Event()

    async def stubborn():
        try:
            await never.wait()
        except asyncio.CancelledError:
            pass  # as a 3.11 wait_for can when its inner future completes at the same time
        await never.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_leftover_tasks(wait_s=0.05) == []
    assert task.cancelled()


async def test_a_task_that_never_ends_is_returned_after_the_rounds():
    release = asyncio.Event()

    async def immortal():
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal())
    await asyncio.sleep(0)
    assert await cancel_leftover_tasks(rounds=3, wait_s=0.01) == [task]
    release.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
