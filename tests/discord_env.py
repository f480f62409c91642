"""The real bot, connected to the local Discord-compatible server, with a few users and guilds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.client import TweetalikeBot, apply_endpoint_overrides, create_bot
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
    try:
        await asyncio.wait_for(task, 10)
    except (asyncio.CancelledError, Exception):
        pass


async def cancel_leftover_tasks(rounds: int = 20) -> None:
    """Cancel what the bot and the server left running, again until it is done.

    The event loop's own teardown cancels leftover tasks once, then waits for them forever; in
    Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives as its inner future
    completes, so a task cancelled once may keep waiting (seen once: a whole CI-like run hung in
    a discord test's loop teardown). Cancelling until done makes that a clean teardown; a task
    that still runs after `rounds` half-seconds fails the test with its name instead of hanging.
    """
    current = asyncio.current_task()
    for _ in range(rounds):
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        for leftover in left:
            leftover.cancel()
        await asyncio.wait(left, timeout=0.5)
    raise AssertionError(f"tasks still running after the bot and the server stopped: {left}")
