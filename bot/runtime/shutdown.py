"""Leaving the event loop cleanly, for the bot, the worker and the CLI."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_leftover_tasks(*, rounds: int = 20, wait_s: float = 0.5) -> list[asyncio.Task]:
    """Cancel every other task of this loop, again until they are done; logs and returns any still
    running.

    `asyncio.run` cancels leftover tasks once, then waits for them without a limit. A task can
    outlive one cancellation: when a query is cancelled, SQLAlchemy closes its aiosqlite
    connection in a shielded task, and if that task is cancelled while closing, aiosqlite's
    `close()` awaits its already stopped thread in a `finally` (seen: a run that never ended
    after a bot was stopped during a query). A second cancellation ends such a task.
    """
    current = asyncio.current_task()
    left: list[asyncio.Task] = []
    for _ in range(rounds):
        left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        if not left:
            break
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=wait_s)
    survivors = [task for task in left if not task.done()]
    for task in survivors:
        log.warning("Still running at exit: %r", task)
    return survivors
