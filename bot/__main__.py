"""Run the Discord bot: `python -m bot`."""

from __future__ import annotations

import asyncio
import logging
import sys

import discord

from .client import TweetalikeBot, apply_endpoint_overrides
from .config import SettingsError, load_settings
from .logs import quiet_libraries

log = logging.getLogger("bot")


async def run() -> None:
    settings = load_settings()
    settings.require_token()
    discord.utils.setup_logging(level=getattr(logging, settings.log_level.upper()), root=True)
    quiet_libraries()
    apply_endpoint_overrides(settings)
    async with TweetalikeBot(settings) as bot:
        await bot.start(settings.discord_token)


def main() -> int:
    try:
        asyncio.run(run())
    except SettingsError as exc:
        logging.basicConfig(format="%(levelname)s %(message)s")
        log.critical("Configuration error: %s", exc)
        return 2
    except discord.LoginFailure:
        log.critical("Discord refused the token: check DISCORD_TOKEN.")
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
