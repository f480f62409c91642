"""Scheduled auto-posts: parsing human intervals, storing schedules, deciding what is due.

Rules that keep a schedule honest across restarts:
- The next run time is stored; after a post the next one is computed from *now*, so a bot that
  was down for a day posts a missed window once, not once per missed interval.
- A post Discord refuses (any answer but 429/5xx, which are retried) counts a failure and waits
  for the next window like a post that went out: a schedule never generates or posts more often
  than its interval. After MAX_SCHEDULE_FAILURES (limits.py) refusals in a row the caller pauses it.
- Several bot processes may share one database (a sharded gateway): each claims a due post in
  storage before taking it, and only for the guilds on its own shards, so a post fires once.
  A claim lasts CLAIM_SECONDS; a process that died holding one frees it when that time passes, or
  at once when it restarts under the same name.
- Before posting, a nonce is stored (`pending_nonce`) and sent with the message; if the process
  dies mid-post, the retry after a restart reuses it and Discord drops the duplicate
  (`enforce_nonce`). Webhook posts, which take no nonce, are checked against recent history.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.core.errors import UserError
from bot.core.handles import normalize_handle
from bot.core.limits import MAX_INTERVAL, MAX_PROMPT_CHARS, MAX_SCHEDULES_PER_GUILD, MIN_INTERVAL
from bot.core.shards import GuildShards, instance_name
from bot.core.storage import ModelRecord, Schedule, Storage, format_interval

__all__ = ["Schedule", "Scheduler", "format_interval", "next_run", "parse_duration", "parse_timing"]

CLAIM_SECONDS = 600  # longer than generating and sending one post, even behind a queue of others

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400, "w": 604800}
# Longest unit names first, so "90minutes" is not read as "90m" + "inutes".
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(weeks?|w|days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)")


def parse_duration(text: str) -> int:
    """'30m', '2h', '1d', '1h30m', '90 minutes' -> seconds. Raises UserError."""
    raw = (text or "").strip().lower()
    if not raw:
        raise UserError("Give a duration such as `30m`, `2h` or `1d`.")
    if raw.startswith("-"):
        raise UserError(f"`{text}` is negative; use a duration such as `30m`, `2h` or `1d`.")
    compact = raw.replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART_RE.finditer(compact):
        if match.start() != pos:
            break
        unit = match.group(2)
        unit = unit[0] if unit not in _UNITS else unit  # "hours" -> "h", "weeks" -> "w"...
        total += float(match.group(1)) * _UNITS[unit]
        pos = match.end()
    if pos != len(compact) or pos == 0:
        raise UserError(f"`{text}` is not a duration; use forms like `30m`, `2h`, `1d` or `1h30m`.")
    return int(total)


def parse_interval(text: str | int) -> int:
    """An auto-post interval: a duration (or seconds already parsed) between 5 minutes and 7 days."""
    seconds = text if isinstance(text, int) else parse_duration(text)
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise UserError(f"`{text}` is out of range: the interval must be between 5 minutes and 7 days.")
    return seconds


def parse_jitter(text: str | int | None, interval: int) -> int:
    if not text:
        return 0
    seconds = text if isinstance(text, int) else parse_duration(text)
    if seconds > interval // 2:
        raise UserError("The jitter must be at most half the interval.")
    return seconds


def parse_daily_times(text: str) -> list[str]:
    """'9:00, 18:30' -> ['09:00', '18:30']."""
    times = []
    for part in re.split(r"[,\s]+", (text or "").strip()):
        if not part:
            continue
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", part)
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise UserError(f"`{part}` is not a time of day; use 24-hour `HH:MM`, e.g. `09:00, 18:30`.")
        times.append(f"{int(match.group(1)):02d}:{match.group(2)}")
    if not times:
        raise UserError("Give at least one time of day, e.g. `09:00`.")
    if len(times) > 24:
        raise UserError("At most 24 times a day.")
    return sorted(set(times))


def parse_timezone(name: str | None) -> str:
    name = (name or "UTC").strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"`{name}` is not a time zone; use a name like `Europe/Paris` or `UTC`.") from None
    return name


def parse_timing(
    every: str | int | None,
    jitter: str | int | None,
    daily_at: str | None,
    timezone: str | None,
    prompt: str = "",
) -> tuple[int, int, list[str] | None, str, str]:
    """Validate a schedule's options: (interval, jitter, daily times, time zone, prompt)."""
    if (every is None) == (daily_at is None):
        raise UserError(
            "Give either an interval (`every`, e.g. `2h`) or times of day (`daily_at`), not both."
        )
    prompt = " ".join((prompt or "").split())
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"The prompt is too long (at most {MAX_PROMPT_CHARS} characters).")
    interval = parse_interval(every) if every is not None else 86400
    jitter_s = parse_jitter(jitter, interval) if every is not None else 0
    times = parse_daily_times(daily_at) if daily_at is not None else None
    tz = parse_timezone(timezone) if times else "UTC"
    return interval, jitter_s, times, tz, prompt


def next_run(schedule: Schedule, after: float, rng: Callable[[], float] = random.random) -> float:
    """The first run time strictly after `after` (jitter spreads interval posts over ± jitter)."""
    if schedule.daily_times:
        zone = ZoneInfo(schedule.timezone)
        local = datetime.fromtimestamp(after, zone)
        for day in range(0, 3):
            date = (local + timedelta(days=day)).date()
            for hhmm in schedule.daily_times:
                hour, minute = map(int, hhmm.split(":"))
                candidate = datetime(date.year, date.month, date.day, hour, minute, tzinfo=zone).timestamp()
                if candidate > after:
                    return candidate
        raise AssertionError("no daily time within three days")  # unreachable with >= 1 time
    jitter = (rng() * 2 - 1) * schedule.jitter_s
    return after + schedule.interval_s + jitter


PersonaLookup = Callable[[int, str], Awaitable[ModelRecord]]


class Scheduler:
    """The schedules feature (`service.schedules`): every check of /autopost, once, and the
    schedules in storage, with a clock (and jitter) that tests can control."""

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        find_persona: PersonaLookup | None = None,
    ):
        self.rows = storage.schedules
        self.clock = clock
        self.rng = rng
        self.find_persona = find_persona  # raises UserError for a persona the guild does not have

    async def add(
        self,
        *,
        guild_id: int,
        handle: str,
        channel_id: int,
        every: str | int | None = None,
        jitter: str | int | None = None,
        prompt: str = "",
        daily_at: str | None = None,
        timezone: str | None = None,
        created_by: int | None = None,
    ) -> tuple[ModelRecord | None, Schedule]:
        """A persona posts on its own, every interval (seconds or '2h') or at times of day.
        Returns the persona (when this scheduler looks personas up) and the new schedule."""
        # The options' errors first, whatever the handle.
        interval, jitter_s, times, tz, prompt = parse_timing(every, jitter, daily_at, timezone, prompt)
        persona = await self.find_persona(guild_id, handle) if self.find_persona else None
        handle = persona.handle if persona else normalize_handle(handle)
        count = await self.rows.count(guild_id)
        if count >= MAX_SCHEDULES_PER_GUILD:
            raise UserError(
                f"This server already has {count} schedules (the limit is {MAX_SCHEDULES_PER_GUILD})."
            )
        now = self.clock()
        draft = Schedule(
            id=0,
            guild_id=guild_id,
            handle=handle,
            channel_id=channel_id,
            interval_s=interval,
            jitter_s=jitter_s,
            prompt=prompt,
            created_by=created_by,
            created_at=now,
            daily_times=times,
            timezone=tz,
        )
        draft.next_run_at = next_run(draft, now, self.rng)
        return persona, await self.rows.add(draft)

    async def get(self, guild_id: int, schedule_id: int) -> Schedule:
        schedule = await self.rows.get(guild_id, schedule_id)
        if schedule is None:
            raise UserError(f"There is no schedule #{schedule_id} in this server. See `/autopost list`.")
        return schedule

    async def list(self, guild_id: int) -> list[Schedule]:
        return await self.rows.list(guild_id)

    async def pause(self, guild_id: int, schedule_id: int, reason: str | None = None) -> Schedule:
        await self.get(guild_id, schedule_id)
        await self.rows.pause(guild_id, schedule_id, reason)
        return await self.get(guild_id, schedule_id)

    async def resume(self, guild_id: int, schedule_id: int) -> Schedule:
        schedule = await self.get(guild_id, schedule_id)
        await self.rows.resume(guild_id, schedule_id, next_run(schedule, self.clock(), self.rng))
        return await self.get(guild_id, schedule_id)

    async def remove(self, guild_id: int, schedule_id: int) -> Schedule:
        schedule = await self.get(guild_id, schedule_id)
        await self.rows.remove(guild_id, schedule_id)
        return schedule

    async def remove_for_handle(self, guild_id: int, handle: str) -> int:
        return await self.rows.remove_for_handle(guild_id, handle)

    async def due(self) -> list[Schedule]:
        return await self.rows.due(self.clock())

    async def claim_due(self, shards: GuildShards | None = None) -> list[Schedule]:
        """Claim the due schedules of the guilds on `shards` (None: every guild) for this process."""
        now = self.clock()
        return await self.rows.claim_due(
            now, owner=instance_name(shards), lease_until=now + CLAIM_SECONDS, shards=shards
        )

    async def begin_post(self, schedule: Schedule) -> str:
        """Record the nonce of the post about to be sent (kept if a previous attempt died)."""
        if schedule.pending_nonce:
            return schedule.pending_nonce
        nonce = f"s{schedule.id}r{int(schedule.next_run_at)}"[:25]
        now = self.clock()
        await self.rows.set_pending(schedule.id, nonce, now)
        schedule.pending_nonce, schedule.pending_since = nonce, now
        return nonce

    async def finish_post(self, schedule: Schedule) -> float:
        """The post went out (or was found already sent): clear the nonce, set the next run from now."""
        now = self.clock()
        following = next_run(schedule, now, self.rng)
        await self.rows.posted(schedule.id, now, following)
        return following

    async def record_failure(self, schedule: Schedule) -> int:
        """Discord refused the post (or generation failed): count it, try again next window.

        The nonce is dropped: a refused post was not created, so the next one is a new post.
        Returns the number of failures in a row.
        """
        return await self.rows.failed(schedule.id, next_run(schedule, self.clock(), self.rng))

    async def postpone(self, schedule: Schedule) -> float:
        """Nothing went out this window (Discord busy, or no usable text): try the next one.

        The nonce is kept: after a 5xx the post may have been created after all, and the retry
        with the same nonce lets Discord drop the duplicate.
        """
        following = next_run(schedule, self.clock(), self.rng)
        await self.rows.postpone(schedule.id, following)
        return following
