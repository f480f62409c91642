"""Schedule parsing and the due/next-run rules, with a controllable clock."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.core.conversation.schedules import (
    Scheduler,
    parse_daily_times,
    parse_duration,
    parse_interval,
    parse_timezone,
)
from bot.core.errors import UserError
from bot.core.storage import Storage


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def scheduler(db_url):
    storage = await Storage.open(db_url)  # SQLite and PostgreSQL
    clock = Clock()
    yield Scheduler(storage, clock=clock, rng=lambda: 0.5)
    await storage.close()


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("90 minutes", 5400),
        ("7d", 604800),
        ("5m", 300),
        ("1w", 604800),
    ],
)
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(
    "text,message",
    [
        ("0s", "between 5 minutes"),
        ("-5m", "negative"),
        ("999999d", "between 5 minutes"),
        ("4m", "between 5 minutes"),
        ("8d", "between 5 minutes"),
        ("soon", "not a duration"),
        ("", "Give a duration"),
        ("5m; DROP TABLE", "not a duration"),
    ],
)
def test_parse_interval_refuses(text, message):
    with pytest.raises(UserError, match=message):
        parse_interval(text)


def test_parse_daily_times_and_timezone():
    assert parse_daily_times("18:30, 9:00") == ["09:00", "18:30"]
    for bad in ("25:00", "9", "noon", ""):
        with pytest.raises(UserError):
            parse_daily_times(bad)
    assert parse_timezone("Europe/Paris") == "Europe/Paris"
    with pytest.raises(UserError, match="time zone"):
        parse_timezone("Mars/Olympus")
    assert parse_duration("1.5h") == 5400


async def test_interval_schedule_due_once_after_downtime(scheduler):
    clock = scheduler.clock
    _, s = await scheduler.add(guild_id=1, handle="alice", channel_id=10, every="1h", jitter="10m")
    assert s.next_run_at == clock.now + 3600  # rng 0.5 -> no jitter offset
    assert await scheduler.due() == []
    clock.now += 10 * 3600  # ten windows missed while the bot was down
    due = await scheduler.due()
    assert [d.id for d in due] == [s.id]
    nonce = await scheduler.begin_post(due[0])
    following = await scheduler.finish_post(due[0])
    assert following == clock.now + 3600
    assert await scheduler.due() == []  # one post for the missed windows, not ten
    assert nonce.startswith(f"s{s.id}r")


async def test_pending_nonce_survives_a_crash(scheduler):
    _, s = await scheduler.add(guild_id=1, handle="alice", channel_id=10, every="5m")
    scheduler.clock.now += 301
    first = (await scheduler.due())[0]
    nonce = await scheduler.begin_post(first)
    # The process dies here; after a restart the schedule is still due with the same nonce.
    again = (await scheduler.due())[0]
    assert again.pending_nonce == nonce and await scheduler.begin_post(again) == nonce
    await scheduler.finish_post(again)
    assert (await scheduler.get(1, s.id)).pending_nonce is None


async def test_daily_schedule_in_a_timezone(scheduler):
    zone = ZoneInfo("Europe/Paris")
    scheduler.clock.now = datetime(2026, 11, 25, 10, 0, tzinfo=zone).timestamp()
    _, s = await scheduler.add(
        guild_id=1, handle="alice", channel_id=10, daily_at="09:00,18:30", timezone="Europe/Paris"
    )
    assert s.next_run_at == datetime(2026, 11, 25, 18, 30, tzinfo=zone).timestamp()
    scheduler.clock.now = s.next_run_at + 1
    await scheduler.finish_post((await scheduler.due())[0])
    assert (await scheduler.get(1, s.id)).next_run_at == datetime(2026, 11, 26, 9, 0, tzinfo=zone).timestamp()
    assert "daily at 09:00, 18:30" in s.describe()


async def test_pause_resume_remove_are_guild_scoped(scheduler):
    _, s = await scheduler.add(guild_id=1, handle="alice", channel_id=10, every="2h")
    with pytest.raises(UserError, match="no schedule"):
        await scheduler.pause(2, s.id)
    with pytest.raises(UserError):
        await scheduler.remove(2, s.id)
    assert (await scheduler.pause(1, s.id, "channel deleted")).paused
    scheduler.clock.now += 3 * 3600
    assert await scheduler.due() == []  # paused schedules never fire
    resumed = await scheduler.resume(1, s.id)
    assert not resumed.paused and resumed.next_run_at > scheduler.clock.now
    await scheduler.remove(1, s.id)
    assert await scheduler.list(1) == []


async def test_add_validates(scheduler):
    with pytest.raises(UserError, match="either an interval"):
        await scheduler.add(guild_id=1, handle="alice", channel_id=10)
    with pytest.raises(UserError, match="jitter"):
        await scheduler.add(guild_id=1, handle="alice", channel_id=10, every="1h", jitter="45m")
    with pytest.raises(UserError, match="letters, digits"):
        await scheduler.add(guild_id=1, handle="../x", channel_id=10, every="1h")
    assert await scheduler.list(1) == []


async def test_refused_posts_are_counted_until_a_post_goes_out(scheduler):
    """Issue 10: a refused post waits for the next window (never sooner) and counts one failure."""
    _, s = await scheduler.add(guild_id=1, handle="alice", channel_id=10, every="1h")
    scheduler.clock.now += 3601
    due = (await scheduler.due())[0]
    await scheduler.begin_post(due)
    assert await scheduler.record_failure(due) == 1
    after = await scheduler.get(1, s.id)
    assert after.pending_nonce is None  # the refused post was not created: the next one is new
    assert after.next_run_at == scheduler.clock.now + 3600 and await scheduler.due() == []
    scheduler.clock.now += 3601
    assert await scheduler.record_failure((await scheduler.due())[0]) == 2
    scheduler.clock.now += 3601
    await scheduler.finish_post((await scheduler.due())[0])
    assert (await scheduler.get(1, s.id)).failures == 0


async def test_postpone_keeps_the_nonce_and_resume_clears_failures(scheduler):
    _, s = await scheduler.add(guild_id=1, handle="alice", channel_id=10, every="1h")
    scheduler.clock.now += 3601
    due = (await scheduler.due())[0]
    nonce = await scheduler.begin_post(due)
    await scheduler.postpone(due)  # Discord busy: the post may exist, so the retry reuses the nonce
    postponed = await scheduler.get(1, s.id)
    assert postponed.pending_nonce == nonce and postponed.failures == 0 and await scheduler.due() == []
    await scheduler.record_failure(postponed)
    await scheduler.pause(1, s.id, "its last 3 posts failed")
    assert (await scheduler.resume(1, s.id)).failures == 0
