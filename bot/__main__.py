"""Run the Discord bot: `python -m bot`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import discord

from bot.config import SettingsError, load_settings
from bot.core.errors import UserError
from bot.discord.client import apply_endpoint_overrides, create_bot
from bot.runtime.logs import quiet_libraries
from bot.runtime.shutdown import cancel_leftover_tasks

log = logging.getLogger("bot")


async def run() -> None:
    settings = load_settings()
    settings.require_token()
    discord.utils.setup_logging(level=getattr(logging, settings.log_level.upper()), root=True)
    quiet_libraries()
    apply_endpoint_overrides(settings)
    # `docker stop` sends SIGTERM: close cleanly, so a running training saves a checkpoint.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with create_bot(settings) as bot:  # leaving the block closes the bot and the core
            running = asyncio.create_task(bot.start(settings.discord_token))
            stop = asyncio.create_task(stopping.wait())
            await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if running.done():
                running.result()  # a failed login and the like end here, with their error
            else:
                log.info("Shutting down")
        await asyncio.gather(running, return_exceptions=True)
    finally:
        await cancel_leftover_tasks()  # so the process exits (see bot/runtime/shutdown.py)


def main() -> int:
    try:
        asyncio.run(run())
    except SettingsError as exc:
        logging.basicConfig(format="%(levelname)s %(message)s")
        log.critical("Configuration error: %s", exc)
        return 2
    except UserError as exc:  # e.g. another process already runs the training queue
        log.critical("Cannot start: %s", exc)
        return 2
    except discord.LoginFailure:
        log.critical("Discord refused the token: check DISCORD_TOKEN.")
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
