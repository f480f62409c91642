"""Run a training worker: `python -m bot.worker` (needs DATABASE_URL=postgresql://...).

Start as many as you like, on any machines that reach the database; each trains the queued
personas one at a time (TRAINING_WORKERS at a time), on its GPU when it has one. See
docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bot.config import SettingsError, load_settings
from bot.core.devices import pick_device
from bot.core.errors import UserError
from bot.core.training.remote_worker import TrainingWorker
from bot.runtime.logs import quiet_libraries
from bot.runtime.shutdown import cancel_leftover_tasks

log = logging.getLogger("bot.worker")


async def run() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_libraries()
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    worker = TrainingWorker(settings)
    log.info("Training on %s", pick_device())
    # SIGTERM (docker stop): checkpoint the running training and hand it back to the queue.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        await cancel_leftover_tasks()  # so the process exits (see bot/runtime/shutdown.py)


def main() -> int:
    try:
        asyncio.run(run())
    except SettingsError as exc:
        logging.basicConfig(format="%(levelname)s %(message)s")
        log.critical("Configuration error: %s", exc)
        return 2
    except UserError as exc:
        log.critical("Cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
