"""The real bot, connected to the local Discord-compatible server, with a few users and guilds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.discord.client import TweetalikeBot, apply_endpoint_overrides, create_bot
from tests.localdiscord import MANAGE_GUILD, LocalDiscord


class Clock:
    """A clock tests can move (schedules read time through the bot's clock)."""

    def __init__(self):
        import time

        self.offset = 0.0
        self._time = time.time

    def __call__(self) -> float:
        return self._time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class DiscordEnv:
    server: LocalDiscord
    bot: TweetalikeBot
    task: asyncio.Task
    clock: Clock
    guild: int
    other_guild: int
    admin: int
    member: int
    outsider_admin: int

    @property
    def channel(self) -> int:
        return self.server.general(self.guild)


def populate(server: LocalDiscord) -> dict:
    guild = server.add_guild("alpha")
    other = server.add_guild("beta")
    admin, member, outsider = server.add_user("admin"), server.add_user("member"), server.add_user("outsider")
    server.add_member(guild, admin, [server.add_role(guild, "mods", MANAGE_GUILD)])
    server.add_member(guild, member)
    server.add_member(other, outsider, [server.add_role(other, "mods", MANAGE_GUILD)])
    server.add_member(other, member)
    return dict(guild=guild, other_guild=other, admin=admin, member=member, outsider_admin=outsider)


async def start_bot(
    server: LocalDiscord, settings, clock: Clock | None = None
) -> tuple[TweetalikeBot, asyncio.Task]:
    settings = settings.replace(
        discord_token=server.token, discord_api_base=server.api_base, discord_gateway_url=server.gateway_url
    )
    apply_endpoint_overrides(settings)
    bot = create_bot(settings, clock=clock or Clock())
    task = asyncio.create_task(bot.start(server.token))
    for _ in range(600):
        if bot.is_ready() and server.commands:
            return bot, task
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    raise AssertionError("the bot did not become ready")


async def stop_bot(bot: TweetalikeBot, task: asyncio.Task) -> None:
    await bot.close()
    # Not wait_for: on its timeout it cancels the task and then waits for it without a limit.
    # A task still running after this is cancelled by the conftest fixture that ends every test.
    await asyncio.wait({task}, timeout=10)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: a bot that stopped with an error is not logged as unhandled
